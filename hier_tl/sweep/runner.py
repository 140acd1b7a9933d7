"""Start (or resume) a sweep on Ray Tune.

Before Ray starts, everything that can be checked is: the sweep file (`SweepConfig.validate`: keys, ranges,
samplers, Ray's own constraints), the name, the results folder's state (new, or resumable and unchanged),
the lease, the dataset and its memory. A start refused after that (the cluster lacks GPUs...) leaves
nothing behind, so the corrected command runs under the same name. Ray's own log lines go to
`<sweep>/logs/ray.log` (a local folder: the cache's `logs/` when results live in object storage).

The driver decodes the dataset once, into this machine's store, and sends trials a reference to it
(`Dataset.ref`), never the images; on a cluster (`--address`) whose results storage every machine reaches,
it also shares the store there (`<sweep>/cache/<key>/`) for machines that lack it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from pathlib import Path

import yaml

from ..core.env import env_flag
from ..core.errors import Interrupted, StorageError, SweepError
from ..core.fileio import cache_dir
from ..core.version import code_version
from ..data.dataset import Dataset
from ..data.synthetic import load_source
from ..results import integrity
from ..results.lease import Lease
from ..results.reading import Results, load_results, stored_sweep_file
from ..results.storage import Storage
from . import raycompat
from .board import BOARD, start_board
from .cluster import check_cluster, machine_memory, start_ray, stop_ray
from .recorder import Recorder
from .space import SEARCHERS, expected_trials, param_space
from .sweep_config import SweepConfig
from .trainable import StorageShare, TrialSpec, trainable

IGNORED_ON_RESUME = ("storage", "smoke", "name", "hier_tl_version", "git_commit", "provenance")
OURS = ("sweep.yaml", ".hier_tl-lease")  # what a refused start may have written into an existing folder


def trial_spec(sweep: SweepConfig, storage: Storage, share: bool = False) -> TrialSpec:
    """What each trial needs of the sweep (a trial never sees the sweep file)."""
    shared = storage.local_dir("shared_runs") if sweep.threshold_only_keys else None
    return TrialSpec(base=dict(sweep.base), scores=sweep.scores_reported(), grid_scores=tuple(sweep.novelty.scores),
                     grid_thresholds=tuple(sweep.novelty.thresholds), metric=sweep.scheduler.metric,
                     mode=sweep.scheduler.mode, shared_runs=str(shared) if shared else None, progress=BOARD,
                     share=storage.uri if share else None)


def shares_caches(address: str | None, storage: Storage) -> bool:
    """Whether trials may run on machines without this one's caches, which every machine reaches through the
    results storage: a cluster (`--address`) with object storage or a shared file system."""
    return bool(address) and (not storage.is_local or env_flag("HIER_TL_SHARED_FS"))


def share_data(data: Dataset, storage: Storage) -> None:
    """Put the decoded dataset where every machine of the cluster finds it (skipped when it is there)."""
    if data.store is None:
        return
    t0 = time.time()
    StorageShare(storage.uri).publish_store(data.store)
    print(f"data: decoded store ({data.store.nbytes / 2**20:,.0f} MB) shared through {storage.uri}/cache "
          f"({time.time() - t0:.1f} s)", flush=True)


def build_tuner(sweep: SweepConfig, storage: Storage, data: Dataset, resume: bool, recorder: Recorder,
                share: bool = False):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    fs = integrity.signing_fs(storage.fs, storage.exp)
    sent = data.ref() if data.store is not None else data  # a reference: trials map this machine's store
    train_fn = tune.with_resources(tune.with_parameters(trainable, spec=trial_spec(sweep, storage, share), data=sent),
                                   {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    if resume:
        tuner = tune.Tuner.restore(storage.exp, train_fn, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=fs)
        raycompat.set_callbacks(tuner, [recorder])
        return tuner
    sc = sweep.scheduler
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=sweep.max_epochs, grace_period=sc.grace_period,
                               reduction_factor=sc.reduction_factor) if sc.kind == "asha" else FIFOScheduler())
    limit_concurrency = SEARCHERS.meta(sweep.search.algo).get("needs_space")
    return tune.Tuner(
        train_fn, param_space=param_space(sweep),
        tune_config=tune.TuneConfig(metric=sc.metric, mode=sc.mode, search_alg=SEARCHERS.get(sweep.search.algo)(sweep),
                                    scheduler=scheduler, num_samples=sweep.num_samples, reuse_actors=True,
                                    max_concurrent_trials=sweep.max_concurrent if limit_concurrency else None),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=storage.root, storage_filesystem=fs, verbose=0, callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            # the last checkpoint (Ray always keeps the latest) and the best one by the sweep metric
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=sc.metric,
                                                    checkpoint_score_order=sc.mode)))


def check_folder(sweep: SweepConfig, storage: Storage, resume: bool) -> None:
    """A new sweep needs an unused name; a resumed one its own folder, unchanged definition and signed state;
    both a usable signing key (checked before Ray starts, not when Ray first writes its state)."""
    integrity.load_key()
    if not resume:
        if storage.exists("sweep.yaml") or storage.has_trials():
            raise SweepError(f"{storage.uri} already holds a sweep named {sweep.name!r}: pass --resume to continue "
                             "it, or --name NEW to start another")
        return
    if not storage.exists("sweep.yaml"):
        raise SweepError(f"nothing to resume at {storage.uri}: no sweep named {sweep.name!r} was started there")
    stored = stored_sweep_file(storage)  # damaged or another program's: one line saying so
    diffs = _differences(stored, dataclasses.asdict(sweep))
    if diffs:
        raise SweepError(f"--resume continues the sweep as it was defined, but this sweep file differs from the one "
                         f"stored in {storage.uri}/sweep.yaml: " + "; ".join(diffs[:6]) +
                         ". Resume with the original file and options, or start the changed sweep with --name NEW.")
    integrity.verify(storage.fs, storage.exp, storage.uri)


def _differences(stored: dict, now: dict, where: str = "") -> list[str]:
    out = []
    for k in sorted(set(stored) | set(now)):
        if not where and k in IGNORED_ON_RESUME:
            continue
        a, b = stored.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{where}{k}.")
        elif a != b:
            out.append(f"{where}{k}: {a!r} stored, {b!r} now")
    return out


def provenance(sweep: SweepConfig, data: Dataset, command: str, sweep_file: str | None) -> dict:
    """What the report's header says was run: the sweep file (and its hash), the dataset (path, image count, a
    hash of its decoded images and labels), the machine, the date and the exact command."""
    h = hashlib.sha256()
    for part in (data.images.numpy(), data.superclass.numpy(), data.subclass.numpy(),  # in place: no copies
                 "\n".join(data.names).encode()):
        h.update(part)
    text = Path(sweep_file).read_bytes() if sweep_file and Path(sweep_file).is_file() else b""
    return {"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "sweep_file": {"path": sweep_file or "?", "sha256": hashlib.sha256(text).hexdigest() if text else "?"},
            "dataset": {"path": sweep.data if sweep.data == "synthetic" else str(data.root), "images": len(data),
                        "sha256": h.hexdigest()},
            "machine": machine()}


def machine() -> dict:
    """This machine in a few words: host, CPU model and cores, memory, GPUs."""
    import platform

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": platform.node(), "cpu": f"{cpu} x {os.cpu_count()}",
            "memory": f"{machine_memory()[0] / 2**30:.0f} GiB", "gpu": ", ".join(gpus) or "none"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def log_path(storage: Storage) -> Path:
    """Where Ray's own log lines go: the sweep folder when it is local, else the local cache."""
    return Path(storage.exp) / "logs" / "ray.log" if storage.is_local else \
        cache_dir() / "logs" / f"{storage.name}-{time.strftime('%Y%m%d-%H%M%S')}-ray.log"


def run_sweep(sweep: SweepConfig, address: str | None = None, resume: bool = False, resume_cmd: str = "",
              command: str = "", sweep_file: str | None = None) -> Results:
    """Run (or resume) a sweep; returns its results. Raises HierTLError subclasses with one-line messages.
    `command` and `sweep_file` are recorded in sweep.yaml's `provenance` (with the dataset and the machine),
    for the report's header."""
    storage = Storage(sweep.storage, sweep.name)
    sweep.storage = storage.root_uri  # absolute: trials run in other working directories
    check_folder(sweep, storage, resume)
    existed = storage.exists()
    lease = Lease(storage)
    lease.acquire()
    t0, recorder = time.time(), None
    try:
        recorder = Recorder(storage, sweep, lease=lease, log=log_path(storage))  # its settings checked first
        data = load_source(sweep.data, sweep.synthetic)
        sweep.check_memory(len(data), data.images.shape[-1], *machine_memory(), shared=data.store is not None)
        print(f"data: {len(data)} images decoded once ({time.time() - t0:.1f} s); results: {storage.uri}", flush=True)
        prov = provenance(sweep, data, command, sweep_file)
        if resume:
            check_same_data(storage, prov)
        _fit(sweep, storage, data, resume, address, recorder, prov)
    except BaseException:
        if not resume and not (recorder and recorder.started):
            _forget_refused_start(storage, existed)
        raise
    finally:
        lease.release()
    return _conclude(sweep, storage, resume_cmd, time.time() - t0)


def check_same_data(storage: Storage, prov: dict) -> None:
    """A resumed sweep trains on the images and labels it started with: finished trials were ranked on them."""
    was = ((stored_sweep_file(storage).get("provenance") or {}).get("dataset") or {}).get("sha256")
    now = prov["dataset"]["sha256"]
    if was and was != now:
        raise SweepError(f"the dataset changed since this sweep started (its images and labels hash to {now[:12]}, "
                         f"{was[:12]} then): restore it, or start a new sweep (another --name)")


def _forget_refused_start(storage: Storage, existed: bool) -> None:
    """A start refused before any trial ran leaves nothing behind: the folder, if this start made it, or else
    the files it wrote."""
    try:
        if not existed:
            storage.remove_all()
        else:
            for rel in OURS:
                if storage.exists(rel):
                    storage.delete(rel)
    except StorageError:
        pass  # the refusal's own message matters more


def _fit(sweep: SweepConfig, storage: Storage, data: Dataset, resume: bool, address: str | None,
         recorder: Recorder, prov: dict | None = None) -> None:
    with raycompat.ray_logs_to(recorder.log):
        start_ray(address, recorder.log)
        try:
            check_cluster(sweep, storage)
            share = shares_caches(address, storage)
            if share:
                share_data(data, storage)
            recorder.board = start_board()
            if not resume:
                storage.write_text("sweep.yaml", yaml.safe_dump({**dataclasses.asdict(sweep), **code_version(),
                                                                 "provenance": prov or {}}, sort_keys=False))
            fs = integrity.signing_fs(storage.fs, storage.exp)
            with raycompat.follow_folder(fs, storage.root, storage.name) if resume else contextlib.nullcontext():
                build_tuner(sweep, storage, data, resume, recorder, share).fit()
        except Exception as e:  # noqa: BLE001 - a storage failure inside Tune arrives wrapped
            cause = recorder.failure or _storage_cause(e)
            if cause is not None:
                raise cause from None
            raise
        finally:
            stop_ray(recorder.log)


def _storage_cause(e: BaseException) -> StorageError | None:
    while e is not None:
        if isinstance(e, StorageError):
            return e
        e = e.__cause__ or e.__context__
    return None


def _conclude(sweep: SweepConfig, storage: Storage, resume_cmd: str, elapsed: float) -> Results:
    res = load_results(storage.uri)
    trials = res.trials
    if trials.empty:
        raise SweepError("no trial reported anything")
    counts = trials.status.value_counts().to_dict()
    print(f"sweep {sweep.name!r} finished in {elapsed:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts.get("interrupted") or len(trials) < expected_trials(sweep):
        raise Interrupted(f"sweep {sweep.name!r} interrupted: resume with\n  "
                          f"{resume_cmd or 'hier-tl sweep SWEEP.yaml --name ' + sweep.name} --resume")
    if (trials.status == "errored").all():
        errs = "\n".join(f"  {r.trial_id}: {r.error}" for r in trials.itertuples())
        raise SweepError(f"every trial failed:\n{errs}")
    return res
