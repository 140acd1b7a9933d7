"""Hand-made trials/epochs tables of a sweep, shared by the tests of the study, HPO panels and Pareto view."""
import math
import os

import numpy as np
import pandas as pd

from hier_tl.sweep import studies

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "lr": {"loguniform": [1e-4, 1e-1]},
    "backbone": {"choice": ["resnet18", "effnet_lite0"]},
    "mixup_alpha": {"uniform": [0.0, 0.4]},
    "batch_size": {"choice": [32, 64]},
    "warmup": {"randint": [0, 3]},
    "wd": {"quniform": [0.0, 0.01, 0.001]},
    "threshold+novelty_score": {"choice": [["0.6", "msp"], ["tpr:0.95", "energy"]]},
}
COMPOSITE = ["('0.6', 'msp')", "('tpr:0.95', 'energy')"]


def make_sweep(statuses, n_epochs=3, seed=0, backbone=None):
    """Hand-made trials/epochs tables: objective rises with lr, final = last epoch's value."""
    rng = np.random.default_rng(seed)
    trows, erows = [], []
    for i, status in enumerate(statuses):
        tid = f"t{i:02d}"
        cfg = {"lr": float(10 ** rng.uniform(-4, -1)),
               "backbone": backbone or ["resnet18", "effnet_lite0"][i % 2],
               "mixup_alpha": float(rng.uniform(0, 0.4)), "batch_size": [32, 64][i // 2 % 2],
               "warmup": int(i % 3), "wd": round(0.001 * (i % 5), 3),
               "threshold": ["0.6", "tpr:0.95"][i % 2], "novelty_score": ["msp", "energy"][i % 2]}
        ran = 0 if status == "pending" else n_epochs
        curve = [0.3 + 0.1 * e + 0.05 * math.log10(cfg["lr"] * 1e4) for e in range(ran)]
        erows += [{"trial_id": tid, "epoch": e, "objective": v, **cfg} for e, v in enumerate(curve)]
        final = curve[-1] if curve and status not in ("errored",) else np.nan
        trows.append({"trial_id": tid, "status": status, "epochs_run": ran, **cfg,
                      "final_objective": final, "best_objective": max(curve, default=np.nan)})
    return pd.DataFrame(trows), pd.DataFrame(erows)


def make_study(statuses, **kw):
    trials, epochs = make_sweep(statuses, **kw)
    return studies.build_study(trials, epochs, SPACE, "objective", "max")


def assert_clean_pngs(out_dir, result):
    """Drawn panels are real PNGs; nothing empty or temporary is left in out_dir."""
    for title, v in result.items():
        if v.startswith("not drawn: "):
            assert "\n" not in v and len(v) > len("not drawn: ")
        else:
            with open(out_dir / v, "rb") as f:
                assert f.read(8) == PNG_MAGIC, title
    for name in os.listdir(out_dir):
        assert os.path.getsize(out_dir / name) > 0, name
        assert name.endswith(".png") and not name.startswith("."), name
