"""ASHA + Optuna against the exhaustive grid on the same space, and Ray's per-trial overhead.

Run inside a loopback-only namespace (it starts Ray):

    scripts/offline.sh python bench/sweep_efficiency.py            # synthetic data, cnn_tiny (CPU)
    scripts/offline.sh python bench/sweep_efficiency.py --data ../shared/data/nndl64 --backbone cnn

Prints: the grid's best validation objective and trial-epochs, ASHA + Optuna's, their ratio, and the
overhead per trial = (sweep wall time - sum of trial compute / concurrency) / trials.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from hier_tl.core.config import from_dict
from hier_tl.sweep.runner import run_sweep
from hier_tl.sweep.sweep_config import SweepConfig

SPACE = {"depth": ["full", "partial"], "lr": [1e-3, 3e-3, 1e-2], "mixup_alpha": [0.0, 0.2]}


def sweep(name: str, storage: str, args, grid: bool) -> SweepConfig:
    base = {"backbone": args.backbone, "epochs": args.epochs, "batch_size": 32, "holdout_subclasses": 1,
            "threshold": "best"}
    space = {k: ({"grid": v} if grid else {"choice": v}) for k, v in SPACE.items()}
    return from_dict(SweepConfig, {
        "name": name, "data": args.data or "synthetic",
        "synthetic": {"seed": 0, "subs_per_super": 4, "per_class": 40, "test_per_class": 1},
        "base": base, "space": space,
        "search": {"algo": "grid"} if grid else {"algo": "optuna", "seed": args.seed},
        "scheduler": {"kind": "none"} if grid else {"kind": "asha", "grace_period": 1, "reduction_factor": 3},
        "num_samples": 1 if grid else args.samples, "resources": {"cpu": 1}, "max_concurrent": args.concurrency,
        "storage": storage, "novelty": {"scores": ["msp"], "thresholds": ["best"]}})


def measure(cfg: SweepConfig) -> dict:
    """Overhead per trial = (span of the trials - their compute / concurrency) / trials, where the span runs
    from the first trial's first epoch start to the last report (Ray's own start-up is reported apart)."""
    t0 = time.time()
    res = run_sweep(cfg)
    wall = time.time() - t0
    trials, epochs = res.trials, res.epochs
    first = epochs[epochs.epoch == 1]
    span = epochs.time.max() - (first.time - first.epoch_time).min()
    n = len(trials)
    return {"trials": n, "trial_epochs": int(trials.epochs_run.sum()), "best": float(trials.best_objective.max()),
            "wall_s": wall, "startup_s": wall - span, "compute_s": float(trials.compute_s.sum()),
            "overhead_per_trial_s": (span - trials.compute_s.sum() / cfg.max_concurrent) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset folder (default: synthetic)")
    ap.add_argument("--backbone", default="cnn_tiny")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--samples", type=int, default=8, help="ASHA + Optuna trials")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as storage:
        grid = measure(sweep("grid", storage, args, grid=True))
        asha = measure(sweep("asha", storage, args, grid=False))
    print(f"\ndata: {args.data or 'synthetic'}; backbone {args.backbone}; {args.epochs} epochs; "
          f"space {SPACE}; concurrency {args.concurrency}")
    print(f"{'':16s} {'trials':>6s} {'trial-epochs':>12s} {'best objective':>15s} {'wall s':>8s} {'start-up s':>10s} "
          f"{'overhead s/trial':>17s}")
    for name, r in (("grid", grid), ("asha+optuna", asha)):
        print(f"{name:16s} {r['trials']:6d} {r['trial_epochs']:12d} {r['best']:15.4f} {r['wall_s']:8.1f} "
              f"{r['startup_s']:10.1f} {r['overhead_per_trial_s']:17.2f}")
    print(f"\nASHA+Optuna used {asha['trial_epochs'] / grid['trial_epochs']:.2f} of the grid's trial-epochs "
          f"(target <= 0.33) and got within {100 * (grid['best'] - asha['best']):.2f} points of its best "
          f"objective (target <= 1 point)")


if __name__ == "__main__":
    main()
