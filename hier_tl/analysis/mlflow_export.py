"""Export a sweep's Parquet results (trials + per-epoch metrics) to MLflow: a tracking server, a database or
a file store (`mlflow_client` opens the URI and words its failures).

One experiment (default ``hier-tl/<sweep name>``), one parent run per sweep (found again by its tag
``hier_tl.sweep_uri``) and one nested child run per trial (found by ``hier_tl.trial_id`` under that parent).
The export is idempotent and incremental: a child records the last epoch it holds in the tag
``hier_tl.epochs_exported`` (written in the same ``log_batch`` call as that epoch's metrics), so exporting
again logs only epochs, trials, tags, params and final metrics that are new or changed. Concurrent exports
of one sweep leave one parent and one child per trial (see `mlflow_client`).

stdlib and pandas only; mlflow is imported inside functions (``pip install 'hier-tl[mlflow]'``).
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.numbers import finite as _finite
from ..core.numbers import missing
from .mlflow_client import (
    connect,
    export_lock,
    failure,
    is_mlflow_error,
    keep_earliest,
    lost_run,
    mlflow_env,
    open_experiment,
    quote,
    require_mlflow,
    search_all,
)

SWEEP_URI_TAG = "hier_tl.sweep_uri"
SWEEP_NAME_TAG = "hier_tl.sweep_name"
TRIAL_ID_TAG = "hier_tl.trial_id"
EPOCHS_TAG = "hier_tl.epochs_exported"
PARENT_TAG = "mlflow.parentRunId"

_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "errored": "FAILED", "interrupted": "KILLED",
           "running": "RUNNING", "pending": "RUNNING"}
_TRIAL_TAGS = ("status", "seed", "hier_tl_version", "git_commit", "node", "device", "error")
_SUMMARY = ("epochs_run", "wall_s", "compute_s", "retries")  # besides final_* and best_* columns
_NOT_METRICS = {"trial_id", "epoch", "time"}
_METRICS_PER_CALL = 999  # + the watermark tag = MLflow's limit of 1000 entities per log_batch
_PARAMS_PER_CALL = 100
_MAX_PARAM, _MAX_TAG = 6000, 5000
_ATTEMPTS = 3  # an export whose run a concurrent export deleted (keeping its twin) starts again


def _ms(v: Any, now_ms: int) -> int:
    """A timestamp in ms from epoch seconds (or ms), a datetime/Timestamp, or `now_ms` if missing."""
    if hasattr(v, "timestamp"):  # datetime, pd.Timestamp, NaT
        return now_ms if missing(v) else int(v.timestamp() * 1000)
    f = _finite(v)
    if f is None:
        return now_ms
    return int(f) if f > 1e11 else int(f * 1000)


def _key(name: Any) -> str:
    """An MLflow-legal metric/param key (alphanumerics, _ - . space / only)."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


def _sync_params(client, run, params: dict[str, str], Param, log: Callable, again: bool = True) -> int:
    """Log the params `run` lacks (MLflow params are immutable: a changed value is reported, not logged). A
    refused write is tried once more against the run as it is now: a concurrent export may have logged them."""
    have = run.data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for k in params.keys() & have.keys():
        if have[k] != params[k]:
            log(f"mlflow: run {run.info.run_id}: param {k}={have[k]!r} kept (now {params[k]!r}; params are immutable)")
    rid = run.info.run_id
    try:
        for i in range(0, len(new), _PARAMS_PER_CALL):
            client.log_batch(rid, params=new[i:i + _PARAMS_PER_CALL])
    except Exception as e:
        if not again or not is_mlflow_error(e):
            raise
        return _sync_params(client, client.get_run(rid), params, Param, log, again=False)
    return len(new)


def _sync_tags(client, run, tags: dict[str, str], RunTag) -> int:
    """Set the tags of `run` whose value differs from `tags`."""
    changed = [RunTag(k, v) for k, v in tags.items() if run.data.tags.get(k) != v]
    for i in range(0, len(changed), _PARAMS_PER_CALL):
        client.log_batch(run.info.run_id, tags=changed[i:i + _PARAMS_PER_CALL])
    return len(changed)


def _sync_metrics(client, run, values: dict[str, float], step: int, Metric) -> int:
    """Log the summary metrics whose latest value in `run` differs (so a rerun adds no history)."""
    now = int(time.time() * 1000)
    new = [Metric(k, v, now, step) for k, v in values.items() if run.data.metrics.get(k) != v]
    for i in range(0, len(new), _METRICS_PER_CALL):
        client.log_batch(run.info.run_id, metrics=new[i:i + _METRICS_PER_CALL])
    return len(new)


def _set_status(client, run, status: str, end_ms: int) -> bool:
    """Move `run` to MLflow status `status` if it is not there already."""
    if run.info.status == status:
        return False
    if status == "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    else:
        client.set_terminated(run.info.run_id, status=status, end_time=end_ms)
    return True


def _text(v: Any) -> str:
    """A param/tag value: numpy scalars as Python ones, integral floats without '.0' (a seed of 3.0 reads 3)."""
    v = v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _trial_tags(row: dict, tid: str, parent_id: str) -> dict[str, str]:
    """A child run's tags: parent link, trial id and the trial's status/seed/version/commit/node/device/error."""
    tags = {PARENT_TAG: parent_id, TRIAL_ID_TAG: tid}
    tags.update({k: _text(row[k])[:_MAX_TAG] for k in _TRIAL_TAGS if k in row and not missing(row[k])})
    if "git_commit" in tags:
        tags["mlflow.source.git.commit"] = tags["git_commit"]
    return tags


def _trial_summary(row: dict, config_keys: set) -> dict[str, float]:
    """The trial's final_*/best_* metrics and epochs_run, wall_s, compute_s, retries (finite values only)."""
    out = {}
    for k, v in row.items():
        if k not in config_keys and (k.startswith(("final_", "best_")) or k in _SUMMARY):
            if (f := _finite(v)) is not None:
                out[_key(k)] = f
    return out


def _epoch_batches(rows: pd.DataFrame, skip: set, since: int, Metric) -> list[tuple[int, list]]:
    """(epoch, [Metric]) for each epoch after `since`, in order: the finite numeric columns not in `skip`."""
    now, out = int(time.time() * 1000), []
    for rec in rows.drop_duplicates("epoch", keep="last").to_dict("records"):
        ep = _finite(rec.get("epoch"))
        if ep is None or int(ep) <= since:
            continue
        ts = _ms(rec.get("time"), now)
        out.append((int(ep), [Metric(_key(k), f, ts, int(ep)) for k, v in rec.items()
                              if k not in skip and (f := _finite(v)) is not None]))
    return sorted(out, key=lambda e: e[0])


def _log_epochs(client, run_id: str, batches: list[tuple[int, list]], RunTag) -> int:
    """Log the epochs' metrics in calls of <= 1000 entities, each whole-epoch call carrying the
    `hier_tl.epochs_exported` watermark (one transaction: a crash never leaves it ahead of the metrics)."""
    pending, last, n = [], None, 0

    def flush():
        client.log_batch(run_id, metrics=pending, tags=[RunTag(EPOCHS_TAG, str(last))])
        return len(pending)

    for ep, ms in batches:
        if pending and len(pending) + len(ms) > _METRICS_PER_CALL:
            n, pending = n + flush(), []
        while len(ms) > _METRICS_PER_CALL:  # an epoch wider than one call: its head goes without the watermark
            client.log_batch(run_id, metrics=ms[:_METRICS_PER_CALL])
            n, ms = n + _METRICS_PER_CALL, ms[_METRICS_PER_CALL:]
        pending, last = pending + ms, ep
    return n + flush() if last is not None else n


def _times(rows: pd.DataFrame) -> list[int]:
    """The trial's epoch times in ms (none where the table has no times)."""
    times = [_ms(t, 0) for t in rows["time"]] if "time" in rows else []
    return [t for t in times if t > 0]


def _export_trial(client, parent_id: str, row: dict, rows: pd.DataFrame, run, config_keys: list,
                  api: tuple, log: Callable) -> tuple[int, int]:
    """Bring the child run of one trial up to date: (changes made, metrics logged)."""
    Metric, Param, RunTag = api
    params = {_key(k): _text(row[k])[:_MAX_PARAM] for k in config_keys if k in row and not missing(row[k])}
    changes = _sync_tags(client, run, _trial_tags(row, str(row["trial_id"]), parent_id), RunTag) + \
        _sync_params(client, run, params, Param, log)
    try:
        since = int(run.data.tags.get(EPOCHS_TAG, 0))
    except ValueError:
        since = 0
    skip = _NOT_METRICS | set(config_keys)
    n = _log_epochs(client, run.info.run_id, _epoch_batches(rows, skip, since, Metric), RunTag)
    step = int(_finite(row.get("epochs_run")) or 0)
    n += _sync_metrics(client, run, _trial_summary(row, set(config_keys)), step, Metric)
    status = _STATUS.get(str(row.get("status", "")).lower(), "RUNNING")
    times = _times(rows)
    changes += _set_status(client, run, status, max(times) if times else int(time.time() * 1000))
    return changes, n


def _parent_run(client, eid: str, meta: dict, sweep_uri: str, api: tuple, log: Callable):
    """The sweep's parent run, found by its `hier_tl.sweep_uri` tag or created (the earliest one kept if
    concurrent exports created several); its params synced from `meta`."""
    name, flt = str(meta["name"]), f"tags.`{SWEEP_URI_TAG}` = {quote(sweep_uri)}"

    def key(r):
        return "parent" if r.data.tags.get(SWEEP_URI_TAG) == sweep_uri and PARENT_TAG not in r.data.tags else None

    kept, _ = keep_earliest(client, search_all(client, eid, flt), key, log)
    if not kept:
        mine = client.create_run(eid, run_name=name, tags={SWEEP_URI_TAG: sweep_uri, SWEEP_NAME_TAG: name})
        kept, _ = keep_earliest(client, search_all(client, eid, flt), key, log)
        kept.setdefault("parent", mine)
    run = kept["parent"]
    for gone in search_all(client, eid, flt, deleted=True):  # a deleted parent's children: no longer ours
        for child in search_all(client, eid, f"tags.`{PARENT_TAG}` = {quote(gone.info.run_id)}"):
            log(f"mlflow: run {child.info.run_id}: its parent {gone.info.run_id} was deleted: deleted")
            client.delete_run(child.info.run_id)
    params = {}
    for k, v in meta.items():
        if k in ("name", "best_trial_id") or missing(v):
            continue
        params[_key(k)] = (",".join(map(_text, v)) if isinstance(v, (list, tuple)) else _text(v))[:_MAX_PARAM]
    _sync_params(client, run, params, api[1], log)
    return run


def _children(client, eid: str, parent_id: str, log: Callable) -> dict[str, Any]:
    """The parent's child runs by their `hier_tl.trial_id` tag; of several for one trial (concurrent exports)
    the earliest is kept and the others are deleted."""
    def key(r):
        return r.data.tags.get(TRIAL_ID_TAG) if r.data.tags.get(PARENT_TAG) == parent_id else None

    return keep_earliest(client, search_all(client, eid, f"tags.`{PARENT_TAG}` = {quote(parent_id)}"), key, log)[0]


def _log_checkpoint(client, run_id: str, path: Path) -> bool:
    """Upload the checkpoint (file or folder) under artifact path 'checkpoint' unless it is there already."""
    have = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, "checkpoint")}
    if path.is_dir():
        if have:
            return False
        client.log_artifacts(run_id, str(path), artifact_path="checkpoint")
    else:
        if have.get(path.name) == path.stat().st_size:
            return False
        client.log_artifact(run_id, str(path), artifact_path="checkpoint")
    return True


def _export_children(client, eid: str, pid: str, trials: pd.DataFrame, epochs: pd.DataFrame | None, meta: dict,
                     api: tuple, log: Callable) -> tuple[dict, list, int, int, int]:
    """Export every trial as a child of run `pid`: (run id by trial id, MLflow statuses, created, updated, metrics).
    New runs are created first, all together, then converged; only then is anything logged to them."""
    keys = list(meta.get("config_keys") or [])
    if epochs is None or "epoch" not in epochs:
        epochs = pd.DataFrame(columns=["trial_id", "epoch"])
    by_trial = {str(t): g for t, g in epochs.groupby(epochs["trial_id"].astype(str), sort=False)}
    records = trials.to_dict("records")
    existing = _children(client, eid, pid, log)
    new = {str(r["trial_id"]) for r in records} - set(existing)
    for row in (r for r in records if str(r["trial_id"]) in new):
        tid, times = str(row["trial_id"]), _times(by_trial.get(str(row["trial_id"]), epochs.iloc[:0]))
        client.create_run(eid, start_time=min(times) if times else None, tags=_trial_tags(row, tid, pid), run_name=tid)
    if new:
        existing = _children(client, eid, pid, log)
    runs, statuses, updated, logged = {}, [], 0, 0
    for row in records:
        tid = str(row["trial_id"])
        run = existing[tid]
        changes, n = _export_trial(client, pid, row, by_trial.get(tid, epochs.iloc[:0]), run, keys, api, log)
        runs[tid], logged = run.info.run_id, logged + n
        updated += tid not in new and bool(changes or n)
        statuses.append(_STATUS.get(str(row.get("status", "")).lower(), "RUNNING"))
        verb = "new run" if tid in new else ("updated" if changes or n else "unchanged")
        log(f"mlflow: trial {tid} [{row.get('status')}] {verb} {run.info.run_id}: {n} metrics")
    return runs, statuses, len(new), updated, logged


def export_mlflow(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict, tracking_uri: str, sweep_uri: str,
                  checkpoint: str | os.PathLike | None = None, experiment: str | None = None,
                  artifact_location: str | None = None, log: Callable[[str], Any] = print,
                  env: dict[str, str] | None = None) -> dict:
    """Export a sweep to MLflow: a parent run for the sweep, a nested run per trial with its config as params,
    per-epoch metrics (step = epoch), final metrics and status; the best trial's `checkpoint` as an artifact.
    `artifact_location` is where a new experiment keeps artifacts (None: the tracking store's default); `env`
    holds MLflow settings for this export (MLFLOW_S3_ENDPOINT_URL...) that the user's environment overrides.

    Idempotent and incremental: runs are found again by tags and only what is new is logged. Returns
    {"experiment_id", "parent_run_id", "created", "updated", "metrics_logged"}. Raises TrackingError (one line)
    when the tracking URI cannot be used, ImportError when mlflow is not installed.
    """
    api = require_mlflow()[1:]
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    name = experiment or f"hier-tl/{meta['name']}"
    with mlflow_env(tracking_uri, env), export_lock(tracking_uri, name, sweep_uri, log):
        client = connect(tracking_uri)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                eid = open_experiment(client, name, artifact_location, log)
                return _export(client, eid, trials, epochs, meta, sweep_uri, ckpt, api, log)
            except Exception as e:
                if attempt < _ATTEMPTS and lost_run(e):
                    log("mlflow: a concurrent export kept its own run of this sweep: exporting again into it")
                    continue
                err = failure(tracking_uri, e)
                if err is None:
                    raise
                raise err from None


def _export(client, eid: str, trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict, sweep_uri: str,
            ckpt: Path | None, api: tuple, log: Callable) -> dict:
    """One pass of `export_mlflow` into experiment `eid`."""
    best = meta.get("best_trial_id")
    parent = _parent_run(client, eid, meta, sweep_uri, api, log)
    pid = parent.info.run_id
    runs, statuses, created, updated, logged = _export_children(client, eid, pid, trials, epochs, meta, api, log)
    if ckpt is not None:
        if best is None or str(best) not in runs:
            log(f"mlflow: checkpoint {ckpt} not logged: best trial {best!r} is not among the trials")
        elif _log_checkpoint(client, runs[str(best)], ckpt):
            log(f"mlflow: trial {best}: checkpoint {ckpt.name} logged")
    ptags = {"hier_tl.n_trials": str(len(runs))}
    if best is not None and str(best) in runs:
        ptags.update({"hier_tl.best_trial_id": str(best), "hier_tl.best_run_id": runs[str(best)]})
    _sync_tags(client, parent, ptags, api[2])
    _set_status(client, parent, "RUNNING" if "RUNNING" in statuses else "FINISHED", int(time.time() * 1000))
    return {"experiment_id": eid, "parent_run_id": pid, "created": created, "updated": updated,
            "metrics_logged": logged}
