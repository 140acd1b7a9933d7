"""`hier-tl export mlflow`: a sweep's results (local or object storage) into MLflow: a tracking server, a
database (sqlite:///...) or a file store (file:///...)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..core.errors import HierTLError
from ..results.reading import best_trial, load_results, trial_checkpoint
from ..results.storage import Storage
from ..train.train_config import CONFIG_KEYS
from .mlflow_client import is_server, probe, shown

ARTIFACTS = "mlflow-artifacts"  # the folder beside the results that --artifact-location defaults to


def default_artifacts(storage: Storage, tracking_uri: str) -> str | None:
    """Where artifacts go unless --artifact-location says: None (the server's store) for a tracking server,
    else the results folder's `mlflow-artifacts/` as a URI (an object store's without its query parameters:
    MLflow reads the endpoint from MLFLOW_S3_ENDPOINT_URL, see `s3_endpoint`)."""
    if is_server(tracking_uri):
        return None
    if storage.is_local:
        return Path(storage.path(ARTIFACTS)).as_uri()
    return storage.file_uri(ARTIFACTS).split("?")[0]


def s3_endpoint(storage: Storage) -> str | None:
    """The endpoint of s3:// results given as `endpoint_override` (with their `scheme`, default https), so
    MLflow's S3 client writes artifacts where the results are; None for other storage."""
    parts = urlsplit(storage.uri)
    query = parse_qs(parts.query)
    endpoint = query.get("endpoint_override", [""])[0]
    if storage.is_local or parts.scheme != "s3" or not endpoint:
        return None
    return endpoint if "://" in endpoint else f"{query.get('scheme', ['https'])[0]}://{endpoint}"


def export_mlflow(uri: str, tracking_uri: str, experiment: str | None = None, artifact_location: str | None = None,
                  log=print) -> dict:
    """One parent run per sweep, a nested run per trial (config as params, every epoch's metrics at
    step=epoch, final metrics, seed and code version as tags), the best trial's checkpoint as an artifact.
    Exporting again adds only what is new; concurrent exports leave one run per sweep and per trial."""
    from . import mlflow_export

    res = load_results(uri, tables=("epochs",))  # a damaged results folder says so first
    probe(tracking_uri)  # a server that is down or failing: one line, before any checkpoint is read
    best = best_trial(res.trials, res.metric, res.mode) if len(res.trials) else None
    meta = {"name": res.meta.get("name", res.storage.name), "config_keys": list(CONFIG_KEYS), "metric": res.metric,
            "mode": res.mode, "best_trial_id": None if best is None else best["trial_id"],
            "search_algo": res.meta.get("search", {}).get("algo"), "scheduler": res.meta.get("scheduler", {}).get("kind")}
    location = artifact_location or default_artifacts(res.storage, tracking_uri)
    endpoint = None if artifact_location else s3_endpoint(res.storage)
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if best is not None:
            from ..train import checkpoint

            state, _ = trial_checkpoint(res.storage, best)
            ckpt = checkpoint.save(state, Path(d) / "checkpoint.pt")
        try:
            out = mlflow_export.export_mlflow(res.trials, res.epochs, meta, tracking_uri, res.storage.uri, ckpt,
                                              experiment, location, log=log,
                                              env={"MLFLOW_S3_ENDPOINT_URL": endpoint} if endpoint else None)
        except ImportError as e:
            raise HierTLError(str(e)) from None
    log(f"exported {len(res.trials)} trial(s) to {shown(tracking_uri)}: {out['created']} new run(s), {out['updated']} "
        f"updated, {out['metrics_logged']} metric values (experiment {out['experiment_id']}, parent run "
        f"{out['parent_run_id']})")
    return out
