"""The Ray Tune trainable: a thin wrapper around `train.fit` whose only contact with Ray is its report call.

Every report carries the epoch's metrics plus, as `thresholds_json`, the validation metrics of each novelty
score x threshold of the sweep's `novelty` grid, computed post hoc from the logits: thresholds never cost
a retraining. Trials that differ only in novelty keys replay one shared training run (`runcache`).
"""

from __future__ import annotations

import json
import math
import socket
import tempfile
from pathlib import Path

from . import checkpoint
from .data import Dataset
from .metrics import evaluate, mean_rows, threshold_rows
from .sweep import SweepConfig


def trainable(sampled: dict, *, sweep: SweepConfig, data: Dataset) -> None:
    """Restore the trial's checkpoint (or replay the shared run), call fit, forward each report to Tune."""
    from ray import tune

    from .train import fit, resolve_device

    cfg = sweep.train_config(sampled)
    scores = sweep.scores_reported()
    send = Sender(sweep, _where(resolve_device(cfg.device)))
    resume = None
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            resume = checkpoint.load(Path(d) / "checkpoint.pt")
            send.restore(Path(d))
    cache = _run_cache(sweep, cfg)
    if resume is None and cache is not None:
        resume = cache.replay(cfg, lambda out: evaluate(out, out.space, cfg.novelty_score, cfg.threshold, scores),
                              send)
        if resume is not None and int(resume["epoch"]) >= cfg.epochs:
            return

    def report(r) -> None:
        send(r.metrics, r.outputs, r.state(), r.fold_outputs)
        if cache is not None and cache.owner:
            cache.store(r)

    try:
        if cache is not None:
            cache.acquire()
        fit(cfg, data, report, resume=resume, scores=scores)
    finally:
        if cache is not None:
            cache.release()


class Sender:
    """Forwards reports to Tune; each checkpoint also carries every report so far (`reported.json`), so
    a driver killed before recording them loses nothing."""

    def __init__(self, sweep: SweepConfig, info: dict):
        self.sweep, self.info, self.reported = sweep, info, []

    def restore(self, folder: Path) -> None:
        p = folder / "reported.json"
        self.reported = json.loads(p.read_text()) if p.is_file() else []

    def __call__(self, m: dict, out, state: dict | None, fold_outputs: list | None = None) -> None:
        from ray import tune

        n = self.sweep.novelty
        rows = mean_rows([threshold_rows(o, n.scores, n.thresholds) for o in (fold_outputs or [out])])
        result = {**_finite({**m, **self.info}, self.sweep.scheduler), "thresholds_json": json.dumps(rows)}
        self.reported = [r for r in self.reported if r["epoch"] < m["epoch"]] + [result]
        with tempfile.TemporaryDirectory() as d:
            if state is not None:
                checkpoint.save(state, Path(d) / "checkpoint.pt")
                (Path(d) / "reported.json").write_text(json.dumps(self.reported))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d) if state is not None else None)


def _where(device) -> dict:
    """Where the trial runs, recorded with its results."""
    import ray

    name = "cpu" if device.type == "cpu" else f"cuda:{__import__('torch').cuda.get_device_name(device)}"
    return {"device": name, "node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()[:12]}


def _run_cache(sweep: SweepConfig, cfg):
    """A shared-run cache when the sweep samples only-novelty keys and results live on a shared filesystem."""
    from .storage import is_uri

    if not sweep.threshold_only_keys or is_uri(sweep.storage) or cfg.folds > 1:  # the cache keeps fold 0 only
        return None
    from .runcache import RunCache

    return RunCache(Path(sweep.storage) / sweep.name / "shared_runs", cfg)


def _finite(m: dict, sched) -> dict:
    """NaN (e.g. novel accuracy without novel images) becomes None; the scheduler's metric, which Tune must
    compare, becomes the worst value for its mode instead."""
    worst = -math.inf if sched.mode == "max" else math.inf
    return {k: ((worst if k == sched.metric else None) if isinstance(v, float) and math.isnan(v) else v)
            for k, v in m.items()}
