"""The MLflow side of `hier-tl export mlflow`: a tracking URI turned into a client, and MLflow's failures into
one line that names the URI and what to do.

Any URI MLflow accepts works: an http(s) server, `sqlite:///file.db` or another database, and the file store
(`file:///folder` or a plain path, which MLflow 3 refuses unless `MLFLOW_ALLOW_FILE_STORE` is set: the export
sets it for that URI). Waits are bounded: a server that is down fails in seconds, one that answers errors
after a few retries (~7 s a call) instead of MLflow's ~4 minutes; the user's own MLFLOW_HTTP_* settings win.

Exports of one sweep never duplicate runs: on one machine they take turns (`export_lock`); across machines
`keep_earliest` (the converge step) keeps the earliest run of each key and deletes the later ones, and an
export whose run was deleted that way starts again (`lost_run`), finding the kept one.

mlflow is imported inside functions (``pip install 'hier-tl[mlflow]'``).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import ssl
import urllib.error
import urllib.request
from typing import Callable, Iterator
from urllib.parse import urlsplit

from ..core.errors import HierTLError
from ..core.fileio import cache_dir, describe, locked

KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the UI's model-training views, not GenAI
SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
# ~7 s of retries (sleeps 0, 2, 4 s plus jitter) per failing call, instead of MLflow's 7 retries over ~4 minutes
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
PROBE_TIMEOUT_S = 5.0
USABLE = "give an http(s)://HOST:PORT server, sqlite:///PATH.db, file:///FOLDER or a database URI"


class TrackingError(HierTLError, ConnectionError):
    """The tracking URI cannot be used (unreachable, failing, unsupported or refused)."""


def require_mlflow():
    """The MLflow classes the export uses, or an ImportError that says how to install them."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ImportError(f"exporting to MLflow needs mlflow ({e}): pip install 'hier-tl[mlflow]'") from e
    return MlflowClient, Metric, Param, RunTag


def scheme(uri: str) -> str:
    """The URI's scheme without its driver (`postgresql+psycopg://` -> postgresql); `databricks` and its
    kin may come bare; '' for a plain path."""
    bare = uri.strip().lower()
    if bare in SERVER_SCHEMES:
        return bare
    return urlsplit(bare).scheme.partition("+")[0] if ":" in bare else ""


def is_server(uri: str) -> bool:
    """Does the URI name a tracking server (which keeps artifacts in its own store)?"""
    return scheme(uri) in SERVER_SCHEMES


def shown(uri: str) -> str:
    """`uri` as messages print it: a password in it (postgresql://user:PASSWORD@host/db) as ***."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        return uri
    return uri.replace(f":{password}@", ":***@") if password else uri


def _is_file_store(uri: str) -> bool:
    return scheme(uri) in ("", "file")


@contextlib.contextmanager
def mlflow_env(uri: str, extra: dict[str, str] | None = None) -> Iterator[None]:
    """While exporting to `uri`: bounded HTTP waits, the file store allowed for a file store URI, no 'View
    run' URL printed per run, and the `extra` settings; any of these the user set stays as they set it."""
    wanted = {**HTTP_DEFAULTS, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", **(extra or {})}
    if _is_file_store(uri):
        wanted["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mine = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in mine})
    logger = logging.getLogger("mlflow")  # its INFO lines ("Creating initial MLflow database tables...")
    level = logger.level
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
        for k in mine:
            os.environ.pop(k, None)


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail at once if an http(s) tracking server is unreachable or answers 5xx (MLflow would retry)."""
    if scheme(uri) not in ("http", "https"):
        return  # databases, file stores, databricks: MLflow's own errors say what is wrong
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise TrackingError(f"MLflow tracking server {shown(uri)} answers {e.code} {e.reason}: start it (or fix "
                                "the proxy in front of it) and export again") from None
        # 4xx (auth, a proxy prefix...): it answered, MLflow's requests say the rest
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return  # TLS settings are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS...)
        raise TrackingError(f"MLflow tracking server {shown(uri)} is unreachable ({e.reason}): start it or fix "
                            "--tracking-uri") from None
    except OSError as e:  # timeouts, resets
        raise TrackingError(f"MLflow tracking server {shown(uri)} is unreachable ({e}): start it or fix "
                            "--tracking-uri") from None


def connect(uri: str):
    """A client for `uri` whose store has answered once (so a bad URI fails here, in one line)."""
    MlflowClient = require_mlflow()[0]
    probe(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as e:
        err = _unusable(uri, e)
        if err is None:
            raise
        raise err from None
    return client


def _unusable(uri: str, e: Exception) -> TrackingError | None:
    """Why MLflow cannot open `uri`, as one line (None: not an error of MLflow or of the environment)."""
    if is_server(uri) and is_mlflow_error(e):
        return failure(uri, e)
    u = shown(uri)
    if isinstance(e, ImportError):
        return TrackingError(f"--tracking-uri {u} needs the Python package {e.name or e}: pip install it (or {USABLE})")
    if "unsupported URI" in str(e):
        return TrackingError(f"--tracking-uri {u}: MLflow has no store for {scheme(uri)!r} URIs; {USABLE}")
    if is_mlflow_error(e):
        return TrackingError(f"--tracking-uri {u}: MLflow cannot use it ({_first_sentence(e, uri)}); {USABLE}")
    if isinstance(e, OSError):
        return TrackingError(f"--tracking-uri {u}: cannot write {e.filename or 'there'} ({describe(e)}): give a "
                             f"place you can write; {USABLE}")
    return None


def is_mlflow_error(e: BaseException) -> bool:
    """An error of MLflow, its HTTP client, its database layer or an artifact store's client (not a bug of ours)."""
    return type(e).__module__.split(".")[0] in ("mlflow", "requests", "urllib3", "sqlalchemy", "botocore", "boto3",
                                                "google", "azure")


def _one_line(e: BaseException, uri: str) -> str:
    """`e`'s message on one line, without the password of `uri`."""
    text = " ".join(str(e).split()) or type(e).__name__
    password = shown(uri) != uri and urlsplit(uri).password
    return text.replace(password, "***") if password else text


def _first_sentence(e: BaseException, uri: str) -> str:
    text = _one_line(e, uri)
    return re.split(r"(?<=[.;])\s", text, maxsplit=1)[0][:300]


def failure(uri: str, e: BaseException) -> TrackingError | None:
    """`e`, raised while exporting to `uri`, as one line; None if it is not MLflow's (a bug: keep it)."""
    if not is_mlflow_error(e):
        return None
    text = _one_line(e, uri)
    if is_server(uri) and ("API request to" in text or type(e).__module__.startswith(("requests", "urllib3"))):
        why = re.search(r"Caused by \w+\(['\"]?(.*?)['\"]?\)\)?$", text)
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        reason = why.group(1) if why else text[:200]
        return TrackingError(f"MLflow tracking server {shown(uri)} failed ({reason}) after {retries} retries: check "
                             "that it is up, or wait longer with MLFLOW_HTTP_REQUEST_MAX_RETRIES / "
                             "MLFLOW_HTTP_REQUEST_TIMEOUT, then export again")
    return TrackingError(f"MLflow at {shown(uri)}: {text[:300]}")


def lost_run(e: BaseException) -> bool:
    """Did a write fail because its run was deleted (by a concurrent export's `keep_earliest`)?"""
    return is_mlflow_error(e) and "'active'" in str(e)


def open_experiment(client, name: str, artifact_location: str | None, log: Callable) -> str:
    """The id of experiment `name`: created (with `artifact_location`, None = the store's default) or restored
    from the bin if need be; tagged as model training unless the user chose a kind in the UI."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            eid = client.create_experiment(name, artifact_location=artifact_location, tags={KIND_TAG: KIND})
        except Exception as e:  # created meanwhile by a concurrent export
            if not is_mlflow_error(e) or getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        else:
            log(f"mlflow: new experiment {name!r}, artifacts in {client.get_experiment(eid).artifact_location}")
            return eid
        exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        log(f"mlflow: restoring deleted experiment {name!r}")
        client.restore_experiment(exp.experiment_id)
    if KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    if artifact_location and _plain(exp.artifact_location) != _plain(artifact_location):
        log(f"mlflow: experiment {name!r} keeps its artifact location {exp.artifact_location} (fixed when it was "
            f"created; --experiment NEW for {artifact_location})")
    return exp.experiment_id


def _plain(location: str) -> str:
    return location.removeprefix("file://").rstrip("/")


def search_all(client, experiment_id: str, filter_string: str, deleted: bool = False) -> list:
    """Every active (or, with `deleted`, deleted) run of the experiment matching `filter_string`, all pages,
    earliest first."""
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  run_view_type=ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def quote(value: str) -> str:
    """A string literal for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value with both quote kinds: {value!r}")


def keep_earliest(client, runs: list, key: Callable, log: Callable) -> tuple[dict, list]:
    """The converge step: the earliest run (start time, then run id: every export orders them alike) of each
    `key(run)` (None: not ours) and the later duplicates, which are deleted. ({key: run}, [deleted runs])."""
    kept, dropped = {}, []
    for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        k = key(run)
        if k is None:
            continue
        if k not in kept:
            kept[k] = run
            continue
        log(f"mlflow: run {run.info.run_id} duplicates {kept[k].info.run_id} (a concurrent export): deleted")
        client.delete_run(run.info.run_id)  # deleting a deleted run is a no-op
        dropped.append(run)
    return kept, dropped


@contextlib.contextmanager
def export_lock(tracking_uri: str, experiment_name: str, sweep_uri: str, log: Callable) -> Iterator[None]:
    """Exports of one sweep to one experiment take turns on this machine (a lock file in the cache folder);
    where no lock can be taken (no fcntl, a read-only cache), they run concurrently and converge."""
    key = hashlib.sha256("\n".join((tracking_uri.rstrip("/"), experiment_name, sweep_uri)).encode()).hexdigest()
    path = cache_dir() / "mlflow-export" / f"{key[:32]}.lock"

    def waiting() -> None:
        log(f"mlflow: waiting for another export of {sweep_uri} to {shown(tracking_uri)} to finish")
    with locked(path, waiting):  # where no lock can be taken, the converge step still keeps one run per key
        yield
