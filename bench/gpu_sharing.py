"""Fractional GPUs: the same sweep with four trials per GPU (`resources.gpu: 0.25`) and with one, same run.

Runs `sweeps/gpu_share.yaml` twice through the CLI, then reads each sweep's trials and epochs tables:
each trial's interval is [last report - wall_s, last report]; prints the most trials running at once,
the devices and nodes they ran on, the GPU processes nvidia-smi saw at once, and trials per hour.

    python bench/gpu_sharing.py --data ../shared/data/nndl64
    python bench/gpu_sharing.py --analyse results/gpu_share      # an existing sweep folder only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def intervals(folder: str):
    """(trial_id, start, end) per trial, from the sweep's tables."""
    from hier_tl.results.reading import load_results

    r = load_results(folder)
    last = r.epochs.groupby("trial_id")["time"].max()
    t = r.trials.set_index("trial_id")
    return [(tid, end - float(t.loc[tid, "wall_s"]), end) for tid, end in last.items()], r


def most_at_once(spans) -> int:
    events = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans], key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def summary(folder: str, label: str, gpu_procs: int | None = None) -> dict:
    spans, r = intervals(folder)
    span = max(e for *_, e in spans) - min(s for _, s, _ in spans)
    devices = sorted(set(r.trials["device"].astype(str)))
    nodes = r.trials["node_id"].nunique()
    row = {"label": label, "trials": len(spans), "at_once": most_at_once(spans), "makespan_s": span,
           "trials_per_hour": 3600 * len(spans) / span, "devices": devices, "nodes": nodes,
           "img_per_s_per_trial": float(r.epochs["images_per_s"].median()),
           "seen_super": float(r.trials["final_seen_super_acc"].mean())}
    if gpu_procs is not None:
        row["gpu_processes_at_once"] = gpu_procs
    return row


class GpuWatch(threading.Thread):
    """Samples nvidia-smi's compute processes every second; `most` is the largest count seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.most, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.most = max(self.most, len([x for x in out.splitlines() if x.strip()]))
            except (OSError, subprocess.SubprocessError):
                return
            self.stop.wait(1.0)


def run_sweep(args, storage: str, name: str, extra: list[str]) -> tuple[str, int]:
    cmd = [sys.executable, "-m", "hier_tl.cli", "sweep", str(ROOT / "sweeps" / "gpu_share.yaml"),
           "--storage", storage, "--name", name, *extra]
    if args.data:
        cmd += ["--data", args.data]
    for s in args.set:
        cmd += ["--set", s]
    watch = GpuWatch()
    watch.start()
    t0 = time.time()
    subprocess.run(cmd, check=True)
    watch.stop.set()
    print(f"{name}: sweep command {time.time() - t0:.1f} s", flush=True)
    return f"{storage}/{name}", watch.most


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset folder (default: the sweep file's)")
    ap.add_argument("--storage", default=None, help="results root (default: a temporary folder)")
    ap.add_argument("--set", action="append", default=[], help="extra sweep override for both runs")
    ap.add_argument("--analyse", nargs="+", help="only analyse these sweep folders")
    args = ap.parse_args()
    if args.analyse:
        rows = [summary(f, Path(f).name) for f in args.analyse]
    else:
        storage = args.storage or tempfile.mkdtemp(prefix="gpu_sharing_")
        shared, procs4 = run_sweep(args, storage, "share4", [])
        alone, procs1 = run_sweep(args, storage, "share1", ["--set", "resources.gpu=1", "--set", "max_concurrent=1"])
        rows = [summary(shared, "gpu 0.25 (4 per GPU)", procs4), summary(alone, "gpu 1 (1 per GPU)", procs1)]
    for r in rows:
        print(r)
    if len(rows) == 2:
        print(f"\ntrials per hour, 4-way sharing / 1-way: {rows[0]['trials_per_hour'] / rows[1]['trials_per_hour']:.2f}x "
              f"(most trials at once: {rows[0]['at_once']} vs {rows[1]['at_once']})")


if __name__ == "__main__":
    main()
