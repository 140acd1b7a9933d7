"""`hier-tl export mlflow`: a sweep's results (local or object storage) into an MLflow tracking server."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.errors import HierTLError
from ..results.reading import best_trial, load_results, trial_checkpoint
from ..train.train_config import CONFIG_KEYS


def export_mlflow(uri: str, tracking_uri: str, experiment: str | None = None, log=print) -> dict:
    """One parent run per sweep, a nested run per trial (config as params, every epoch's metrics at
    step=epoch, final metrics, seed and code version as tags), the best trial's checkpoint as an artifact.
    Exporting again adds only what is new."""
    from . import mlflow_export

    res = load_results(uri, tables=("epochs",))
    best = best_trial(res.trials, res.metric, res.mode) if len(res.trials) else None
    meta = {"name": res.meta.get("name", res.storage.name), "config_keys": list(CONFIG_KEYS), "metric": res.metric,
            "mode": res.mode, "best_trial_id": None if best is None else best["trial_id"],
            "search_algo": res.meta.get("search", {}).get("algo"), "scheduler": res.meta.get("scheduler", {}).get("kind")}
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if best is not None:
            from ..train import checkpoint

            state, _ = trial_checkpoint(res.storage, best)
            ckpt = checkpoint.save(state, Path(d) / "checkpoint.pt")
        try:
            out = mlflow_export.export_mlflow(res.trials, res.epochs, meta, tracking_uri, res.storage.uri, ckpt,
                                              experiment, log=log)
        except (ImportError, ConnectionError) as e:
            raise HierTLError(str(e)) from None
    log(f"exported {len(res.trials)} trial(s) to {tracking_uri}: {out['created']} new run(s), {out['updated']} "
        f"updated, {out['metrics_logged']} metric values (experiment {out['experiment_id']}, parent run "
        f"{out['parent_run_id']})")
    return out
