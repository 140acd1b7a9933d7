"""Start (or resume) a sweep on Ray: the only module that starts and stops Ray.

Before Ray starts, everything that can be checked is: the sweep file (`SweepConfig.validate`), the name,
the results folder's state (new, or resumable and unchanged), the lease, the dataset.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import time

import yaml

from . import code_version, integrity, raycleanup
from .data import Dataset
from .errors import Interrupted, StorageError, SweepError
from .lease import Lease
from .recorder import Recorder
from .results import Results, load_results
from .space import expected_trials, param_space
from .storage import Storage
from .sweep import SweepConfig
from .synthetic import load_source
from .trainable import trainable
from .registry import SEARCHERS

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the old reporter prints nothing: our progress line instead
    "RAY_SCHEDULER_EVENTS": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files: Parquet is the record
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
IGNORED_ON_RESUME = ("storage", "smoke", "name", "hier_tl_version", "git_commit")


def start_ray(address: str | None) -> None:
    import ray

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
                raycleanup.MARK: str(os.getpid())}  # single node: no external IP probe; the cleanup tag
    saved = {k: os.environ.get(k) for k in embedded}
    os.environ.update(embedded)
    try:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    raycleanup.record()  # a driver killed with -9 leaves these; the next start removes them


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
    if len(hosts) > 1 and storage.is_local and os.environ.get("HIER_TL_SHARED_FS") != "1":
        raise SweepError(f"this cluster spans {len(hosts)} hosts but --storage {storage.uri} is a node-local path: "
                         "Ray no longer syncs trial outputs to the head, so results and checkpoints would be "
                         "scattered. Use --storage s3://... or gs://... (or set HIER_TL_SHARED_FS=1 for a "
                         "filesystem mounted at the same path on every node).")


def build_tuner(sweep: SweepConfig, storage: Storage, data: Dataset, resume: bool, recorder: Recorder):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    fs = integrity.signing_fs(storage.fs, storage.exp)
    train_fn = tune.with_resources(tune.with_parameters(trainable, sweep=sweep, data=data),
                                   {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    if resume:
        tuner = tune.Tuner.restore(storage.exp, train_fn, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=fs)
        tuner._local_tuner._run_config.callbacks = [recorder]  # derived now, never from the pickle
        return tuner
    sc = sweep.scheduler
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=sweep.max_epochs, grace_period=sc.grace_period,
                               reduction_factor=sc.reduction_factor) if sc.kind == "asha" else FIFOScheduler())
    limit_concurrency = SEARCHERS.meta(sweep.search.algo).get("needs_space")
    return tune.Tuner(
        train_fn, param_space=param_space(sweep),
        tune_config=tune.TuneConfig(metric=sc.metric, mode=sc.mode, search_alg=SEARCHERS.get(sweep.search.algo)(sweep),
                                    scheduler=scheduler, num_samples=sweep.num_samples, reuse_actors=True,
                                    max_concurrent_trials=(sweep.max_concurrent or None) if limit_concurrency else None),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=storage.root, storage_filesystem=fs, verbose=0, callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            # the last checkpoint (Ray always keeps the latest) and the best one by the sweep metric
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=sc.metric,
                                                    checkpoint_score_order=sc.mode)))


def check_folder(sweep: SweepConfig, storage: Storage, resume: bool) -> None:
    """A new sweep needs an unused name; a resumed one its own folder, unchanged definition and signed state."""
    if not resume:
        if storage.exists("sweep.yaml") or storage.exists("trials.parquet"):
            raise SweepError(f"{storage.uri} already holds a sweep named {sweep.name!r}: pass --resume to continue "
                             "it, or --name NEW to start another")
        return
    if not storage.exists("sweep.yaml"):
        raise SweepError(f"nothing to resume at {storage.uri}: no sweep named {sweep.name!r} was started there")
    stored = yaml.safe_load(storage.read_text("sweep.yaml")) or {}
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


def run_sweep(sweep: SweepConfig, address: str | None = None, resume: bool = False, resume_cmd: str = "") -> Results:
    """Run (or resume) a sweep; returns its results. Raises HierTLError subclasses with one-line messages."""
    storage = Storage(sweep.storage, sweep.name)
    sweep.storage = storage.root_uri  # absolute: trials run in other working directories
    check_folder(sweep, storage, resume)
    lease = Lease(storage)
    lease.acquire()
    t0 = time.time()
    try:
        data = load_source(sweep.data, sweep.synthetic)
        sweep.check_memory(len(data), data.images.shape[-1], *_memory())
        print(f"data: {len(data)} images decoded once ({time.time() - t0:.1f} s); results: {storage.uri}", flush=True)
        if not resume:
            storage.write_text("sweep.yaml", yaml.safe_dump({**dataclasses.asdict(sweep), **code_version()},
                                                            sort_keys=False))
        _fit(sweep, storage, data, resume, address, Recorder(storage, sweep, lease=lease))
    finally:
        lease.release()
    return _conclude(sweep, storage, resume_cmd, time.time() - t0)


def _memory() -> tuple[int, int | None]:
    """Host memory of this machine and the free memory of its first GPU (None without one)."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import torch

    return host, torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else None


@contextlib.contextmanager
def _new_trials_follow_the_folder(storage: Storage, resume: bool):
    """Ray restores its search algorithm with the storage of the run that pickled it, so trials it creates
    after a resume would write into the folder the sweep was *copied from*. Give them, as Ray itself does
    for restored trials (`TuneController._restore_trials`), the folder this command names."""
    if not resume:
        yield
        return
    import ray.tune.search.basic_variant as basic
    import ray.tune.search.search_generator as generator

    fs = integrity.signing_fs(storage.fs, storage.exp)
    originals = {m: m._create_trial_from_spec for m in (basic, generator)}

    def follow(make):
        def create(spec, *args, **kwargs):
            if spec.get("storage") is not None:
                moved = copy.copy(spec["storage"])
                moved.storage_filesystem, moved.storage_fs_path = fs, storage.root
                moved.experiment_dir_name = storage.name
                spec = {**spec, "storage": moved}
            return make(spec, *args, **kwargs)
        return create
    for module, make in originals.items():
        module._create_trial_from_spec = follow(make)
    try:
        yield
    finally:
        for module, make in originals.items():
            module._create_trial_from_spec = make


def _fit(sweep, storage, data, resume, address, recorder) -> None:
    import ray

    start_ray(address)
    try:
        check_cluster(sweep, storage)
        with _new_trials_follow_the_folder(storage, resume):
            build_tuner(sweep, storage, data, resume, recorder).fit()
    except Exception as e:  # noqa: BLE001 - a storage failure inside Tune arrives wrapped
        cause = recorder.failure or _storage_cause(e)
        if cause is not None:
            raise cause from None
        raise
    finally:
        ray.shutdown()
        raycleanup.forget()


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
