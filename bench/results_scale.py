"""Cost of the sweep's result bookkeeping per report, at the start and at the end of a sweep.

Feeds N trials x E epochs of synthetic reports, each with the search sweep's novelty grid (4 scores x 8
thresholds = 32 threshold rows), through the same Tune callback the sweep uses (`recorder.Recorder`: the
Ray-free ledger + append-only Parquet parts), on a local results folder. No Ray cluster, no training.
Prints ms per report over the first and the last 10% of reports, their ratio, and the total.

    python bench/results_scale.py                    # 60 x 15 (sweeps/search.yaml's size), 1,000 x 20, 10,000 x 3
    python bench/results_scale.py --trials 60 --epochs 15
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
import time
from types import SimpleNamespace

from hier_tl.results.storage import Storage
from hier_tl.sweep.recorder import Recorder
from hier_tl.sweep.sweep_config import SweepConfig
from hier_tl.train.train_config import TrainConfig

SCORES = ["msp", "maxlogit", "energy", "knn"]
THRESHOLDS = [0.3, 0.5, 0.6, 0.7, 0.9, "tpr:0.9", "tpr:0.95", "best"]


def fake_result(epoch: int, rng: random.Random) -> dict:
    rows = [{"score": s, "threshold": str(t), "threshold_super": rng.random(), "threshold_sub": rng.random(),
             "seen_super_acc": rng.random(), "novel_super_acc": rng.random(), "seen_sub_acc": rng.random(),
             "novel_sub_acc": rng.random(), "objective": rng.random(), "auroc_super": rng.random(),
             "auroc_sub": rng.random()} for s in SCORES for t in THRESHOLDS]
    metrics = {k: rng.random() for k in ("train_loss", "val_loss", "train_time", "epoch_time", "images_per_s",
                                         "current_lr", "objective", "seen_super_acc", "seen_sub_acc", "super_acc",
                                         "sub_acc", "novel_super_acc", "novel_sub_acc", "threshold_super",
                                         "threshold_sub", *(f"auroc_{lvl}_{s}" for lvl in ("super", "sub") for s in SCORES))}
    return {"epoch": epoch, **metrics, "node": "n", "node_id": "abc", "device": "cpu",
            "thresholds_json": json.dumps(rows)}


def run(n_trials: int, n_epochs: int, concurrent: int = 8) -> dict:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        sweep = SweepConfig(name="scale", storage=d, space={"lr": {"loguniform": [1e-4, 1e-2]}},
                            base={"epochs": n_epochs})
        rec = Recorder(Storage(d, "scale"), sweep, progress_every=1e9, heartbeat=1e9)
        rec.setup()
        trials = [SimpleNamespace(trial_id=f"t{i:05d}", config={"lr": 10 ** rng.uniform(-4, -2)}, path=f"{d}/t{i}",
                                  error_file=None) for i in range(n_trials)]
        times, queue, running = [], list(trials), []
        t_all, cpu_all = time.perf_counter(), time.process_time()
        while queue or running:
            while queue and len(running) < concurrent:
                t = queue.pop(0)
                rec.on_trial_start(0, trials, t)
                running.append([t, 0])
            slot = running[rng.randrange(len(running))]
            slot[1] += 1
            result = fake_result(slot[1], rng)
            t0 = time.perf_counter()
            rec.on_trial_result(0, trials, slot[0], result)
            rec.on_step_end(0, trials)
            if slot[1] == n_epochs:  # a trial's last report also closes it (forced flush, journal)
                rec.on_trial_complete(0, trials, slot[0])
                running.remove(slot)
            times.append(time.perf_counter() - t0)
        rec.on_experiment_end(trials)
        total, cpu = time.perf_counter() - t_all, time.process_time() - cpu_all
        k = max(1, len(times) // 10)
        first, last = sum(times[:k]) / k * 1e3, sum(times[-k:]) / k * 1e3
        return {"trials": n_trials, "epochs": n_epochs, "reports": len(times), "first_ms": first, "last_ms": last,
                "ratio": last / first, "total_s": total, "cpu_per_trial_ms": cpu / n_trials * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    a = ap.parse_args()
    sizes = [(a.trials, a.epochs)] if a.trials else [(60, 15), (1000, 20), (10_000, 3)]
    TrainConfig()  # import the registries before timing
    for n, e in sizes:
        with contextlib.redirect_stdout(io.StringIO()):  # the sweep's progress lines
            r = run(n, e)
        print(f"{n} trials x {e} epochs = {r['reports']} reports: {r['first_ms']:.1f} ms/report over the first 10%, "
              f"{r['last_ms']:.1f} ms over the last 10% (x{r['ratio']:.2f}); {r['total_s']:.1f} s in all, driver CPU "
              f"{r['cpu_per_trial_ms']:.1f} ms per trial (its whole life: start, reports, end)", flush=True)


if __name__ == "__main__":
    main()
