"""Starting and checking Ray: an embedded, loopback-only Ray of this process's own (never another instance
that happens to run on the machine), or the cluster `--address` names."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..core.env import env_flag
from ..core.errors import SweepError
from ..results.storage import Storage
from . import raycleanup, raycompat
from .sweep_config import SweepConfig

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the old reporter prints nothing: our progress line instead
    "RAY_SCHEDULER_EVENTS": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files: Parquet is the record
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def start_ray(address: str | None, log: Path | None = None) -> None:
    """Join the cluster at `address`, or start an embedded Ray of this process's own: `address="local"`, so a
    Ray already running on the machine (or named by RAY_ADDRESS) is never joined by accident. What Ray's core
    prints while it starts goes to `log`."""
    import ray

    with raycompat.stderr_to(log) if log else contextlib.nullcontext():
        _init(ray, address)


def _init(ray, address: str | None) -> None:
    os.environ.update({k: os.environ.get(k, v) for k, v in QUIET_ENV.items()})
    # the result grid looks for per-trial JSON logs we do not write (Parquet is the record)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    # for the embedded, loopback-only Ray (its processes inherit them) and not beyond: a later `ray start`
    # of a multi-node cluster from this process must not see them
    embedded = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),  # no token on loopback
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
                raycleanup.MARK: raycleanup.mark_value()}  # single node: no external IP probe; the cleanup tag
    saved = {k: os.environ.get(k) for k in (*embedded, "RAY_ADDRESS")}
    os.environ.update(embedded)
    os.environ.pop("RAY_ADDRESS", None)
    try:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 _node_ip_address="127.0.0.1")  # loopback: no probe of an outside address for the node IP
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    raycleanup.record()  # a driver killed with -9 leaves these; the next start removes them


def stop_ray(log: Path | None = None) -> None:
    import ray

    with raycompat.stderr_to(log) if log else contextlib.nullcontext():
        ray.shutdown()
    raycleanup.forget()


def check_cluster(sweep: SweepConfig, storage: Storage) -> None:
    """Refuse what would hang or lose results: GPUs the cluster lacks, node-local storage across hosts."""
    import ray

    total = ray.cluster_resources()
    for res, n in {"CPU": sweep.resources.cpu, "GPU": sweep.resources.gpu}.items():
        if n > total.get(res, 0):
            have = total.get(res, 0)
            fix = "resources.gpu=0" if res == "GPU" else f"resources.cpu={have:g}"
            raise SweepError(f"each trial asks for {n:g} {res} but the cluster has {have:g} in all: no trial could "
                             f"ever start. Run with --set {fix}, or join a cluster that has them (--address).")
    hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    if len(hosts) > 1 and storage.is_local and not env_flag("HIER_TL_SHARED_FS"):
        raise SweepError(f"this cluster spans {len(hosts)} hosts but --storage {storage.uri} is a node-local path: "
                         "Ray no longer syncs trial outputs to the head, so results and checkpoints would be "
                         "scattered. Use --storage s3://... or gs://... (or set HIER_TL_SHARED_FS=1 for a "
                         "filesystem mounted at the same path on every node).")


def machine_memory() -> tuple[int, int | None]:
    """Host memory of this machine and the free memory of its first GPU (None without one)."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import torch

    return host, torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else None
