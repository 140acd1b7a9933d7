"""Export a sweep's Parquet results (trials + per-epoch metrics) to an MLflow tracking server.

One experiment (default ``hier-tl/<sweep name>``), one parent run per sweep (found again by its tag
``hier_tl.sweep_uri``) and one nested child run per trial (found by ``hier_tl.trial_id`` under that parent).
The export is idempotent and incremental: a child records the last epoch it holds in the tag
``hier_tl.epochs_exported`` (written in the same ``log_batch`` call as that epoch's metrics), so exporting
again logs only epochs, trials, tags, params and final metrics that are new or changed.

A leaf module: stdlib and pandas only; mlflow is imported inside functions (``pip install 'hier-tl[mlflow]'``).
"""
from __future__ import annotations

import contextlib
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.numbers import finite as _finite
from ..core.numbers import missing

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
_PROBE_TIMEOUT_S = 5.0


def _require_mlflow():
    """The MLflow classes used here, or an ImportError that says how to install them."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ImportError(f"exporting to MLflow needs mlflow ({e}): pip install 'hier-tl[mlflow]'") from e
    return MlflowClient, Metric, Param, RunTag


def _probe(uri: str, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Raise ConnectionError at once if an http(s) tracking server does not answer (MLflow would retry for minutes)."""
    if not uri.lower().startswith(("http://", "https://")):
        return  # file:, sqlite:, databricks...: nothing to probe
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (auth, proxy prefix...): reachable
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return  # TLS settings are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS...)
        raise ConnectionError(f"MLflow tracking server {uri} is unreachable: {e.reason}") from None
    except OSError as e:  # timeouts, resets
        raise ConnectionError(f"MLflow tracking server {uri} is unreachable: {e}") from None


@contextlib.contextmanager
def _quiet():
    """Keep MLflow from printing a 'View run' URL for every run it terminates (unless the user chose)."""
    key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    old = os.environ.get(key)
    os.environ.setdefault(key, "true")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)


def _quote(value: str) -> str:
    """A string literal for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value with both quote kinds: {value!r}")




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


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    """Every active run of the experiment matching `filter_string`, all pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment(client, name: str, log: Callable) -> str:
    """The id of experiment `name`, created (or restored from the bin) if need be."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        log(f"mlflow: new experiment {name!r}")
        return client.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        log(f"mlflow: restoring deleted experiment {name!r}")
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _sync_params(client, run, params: dict[str, str], Param, log: Callable) -> int:
    """Log the params `run` lacks (MLflow params are immutable: a changed value is reported, not logged)."""
    have = run.data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for k in params.keys() & have.keys():
        if have[k] != params[k]:
            log(f"mlflow: run {run.info.run_id}: param {k}={have[k]!r} kept (now {params[k]!r}; params are immutable)")
    rid = run.info.run_id
    for i in range(0, len(new), _PARAMS_PER_CALL):
        client.log_batch(rid, params=new[i:i + _PARAMS_PER_CALL])
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


def _export_trial(client, eid: str, parent_id: str, row: dict, rows: pd.DataFrame, run, config_keys: list,
                  api: tuple, log: Callable) -> tuple[Any, int, int]:
    """Create or bring up to date the child run of one trial: (run, changes made, metrics logged)."""
    Metric, Param, RunTag = api
    tid = str(row["trial_id"])
    times = [_ms(t, 0) for t in rows["time"]] if "time" in rows else []
    times = [t for t in times if t > 0]
    tags = _trial_tags(row, tid, parent_id)
    if run is None:
        run = client.create_run(eid, start_time=min(times) if times else None, tags=tags, run_name=tid)
    params = {_key(k): _text(row[k])[:_MAX_PARAM] for k in config_keys if k in row and not missing(row[k])}
    changes = _sync_tags(client, run, tags, RunTag) + _sync_params(client, run, params, Param, log)
    try:
        since = int(run.data.tags.get(EPOCHS_TAG, 0))
    except ValueError:
        since = 0
    skip = _NOT_METRICS | set(config_keys)
    n = _log_epochs(client, run.info.run_id, _epoch_batches(rows, skip, since, Metric), RunTag)
    step = int(_finite(row.get("epochs_run")) or 0)
    n += _sync_metrics(client, run, _trial_summary(row, set(config_keys)), step, Metric)
    status = _STATUS.get(str(row.get("status", "")).lower(), "RUNNING")
    end = max(times) if times else int(time.time() * 1000)
    changes += _set_status(client, run, status, end)
    return run, changes, n


def _parent_run(client, eid: str, meta: dict, sweep_uri: str, api: tuple, log: Callable):
    """The sweep's parent run, found by its `hier_tl.sweep_uri` tag or created; its params synced from `meta`."""
    name = str(meta["name"])
    found = [r for r in _search_all(client, eid, f"tags.`{SWEEP_URI_TAG}` = {_quote(sweep_uri)}")
             if r.data.tags.get(SWEEP_URI_TAG) == sweep_uri and PARENT_TAG not in r.data.tags]
    run = found[0] if found else client.create_run(
        eid, run_name=name, tags={SWEEP_URI_TAG: sweep_uri, SWEEP_NAME_TAG: name})
    params = {}
    for k, v in meta.items():
        if k in ("name", "best_trial_id") or missing(v):
            continue
        params[_key(k)] = (",".join(map(_text, v)) if isinstance(v, (list, tuple)) else _text(v))[:_MAX_PARAM]
    _sync_params(client, run, params, api[1], log)
    return run


def _children(client, eid: str, parent_id: str) -> dict[str, Any]:
    """The parent's child runs by their `hier_tl.trial_id` tag (the earliest one if a trial has several)."""
    runs = _search_all(client, eid, f"tags.`{PARENT_TAG}` = {_quote(parent_id)}")
    out = {}
    for r in runs:
        tid = r.data.tags.get(TRIAL_ID_TAG)
        if tid is not None and r.data.tags.get(PARENT_TAG) == parent_id:
            out.setdefault(tid, r)
    return out


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
    """Export every trial as a child of run `pid`: (run id by trial id, MLflow statuses, created, updated, metrics)."""
    keys = list(meta.get("config_keys") or [])
    if epochs is None or "epoch" not in epochs:
        epochs = pd.DataFrame(columns=["trial_id", "epoch"])
    by_trial = {str(t): g for t, g in epochs.groupby(epochs["trial_id"].astype(str), sort=False)}
    existing = _children(client, eid, pid)
    runs, statuses, created, updated, logged = {}, [], 0, 0, 0
    for row in trials.to_dict("records"):
        tid = str(row["trial_id"])
        old = existing.get(tid)
        run, changes, n = _export_trial(client, eid, pid, row, by_trial.get(tid, epochs.iloc[:0]), old, keys, api, log)
        runs[tid], logged = run.info.run_id, logged + n
        created += old is None
        updated += old is not None and bool(changes or n)
        statuses.append(_STATUS.get(str(row.get("status", "")).lower(), "RUNNING"))
        verb = "new run" if old is None else ("updated" if changes or n else "unchanged")
        log(f"mlflow: trial {tid} [{row.get('status')}] {verb} {run.info.run_id}: {n} metrics")
    return runs, statuses, created, updated, logged


def export_mlflow(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict, tracking_uri: str, sweep_uri: str,
                  checkpoint: str | os.PathLike | None = None, experiment: str | None = None,
                  log: Callable[[str], Any] = print) -> dict:
    """Export a sweep to MLflow: a parent run for the sweep, a nested run per trial with its config as params,
    per-epoch metrics (step = epoch), final metrics and status; the best trial's `checkpoint` as an artifact.

    Idempotent and incremental: runs are found again by tags and only what is new is logged. Returns
    {"experiment_id", "parent_run_id", "created", "updated", "metrics_logged"}. Raises ConnectionError when an
    http(s) tracking server does not answer, ImportError when mlflow is not installed.
    """
    MlflowClient, Metric, Param, RunTag = _require_mlflow()
    api = (Metric, Param, RunTag)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    _probe(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    best = meta.get("best_trial_id")
    with _quiet():
        eid = _experiment(client, experiment or f"hier-tl/{meta['name']}", log)
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
        _sync_tags(client, parent, ptags, RunTag)
        _set_status(client, parent, "RUNNING" if "RUNNING" in statuses else "FINISHED", int(time.time() * 1000))
    return {"experiment_id": eid, "parent_run_id": pid, "created": created, "updated": updated,
            "metrics_logged": logged}
