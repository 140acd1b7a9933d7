"""Run a sweep file on Ray Tune: the trainable is a thin wrapper around `train.fit`.

- The dataset is decoded once on the driver and put in Ray's object store (`tune.with_parameters`).
- Every report carries the epoch's validation metrics for each novelty score x threshold of the sweep's
  `novelty` section, computed post-hoc from the logits: thresholds never cost a retraining.
- `ResultsWriter` (a Tune callback on the driver) rewrites trials / epochs / thresholds Parquet files
  atomically after every report, so a killed driver leaves readable files with every reported epoch.
- Resources are checked against the cluster before anything starts: no trial waits PENDING for a GPU
  that does not exist.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

from . import code_version

from .data import Dataset, load_dataset
from .metrics import evaluate
from .results import config_columns
from .sweep import SweepConfig
from .storage import Storage

RESULT_FILES = ("trials.parquet", "epochs.parquet", "thresholds.parquet")


class SweepError(RuntimeError):
    """The sweep cannot start, or every trial failed."""


def sampler(spec: dict):
    from ray import tune

    (kind, args), = spec.items()
    return {
        "choice": lambda: tune.choice(args),
        "grid": lambda: tune.grid_search(args),
        "uniform": lambda: tune.uniform(*args),
        "loguniform": lambda: tune.loguniform(*args),
        "randint": lambda: tune.randint(*args),
        "quniform": lambda: tune.quniform(*args),
    }[kind]()


def param_space(cfg: SweepConfig) -> dict:
    from ray import tune

    grid = cfg.search.algo == "grid"
    return {k: tune.grid_search(next(iter(s.values()))) if grid else sampler(s) for k, s in cfg.space.items()}


def threshold_rows(out, space, scores, thresholds) -> list[dict]:
    """One row per (score, threshold): the four seen/novel accuracies and the AUROC, from saved logits."""
    rows = []
    for score in scores:
        for thr in thresholds:
            m = evaluate(out, space, score, thr)
            rows.append({"score": score, "threshold": str(thr), "threshold_super": m["threshold_super"],
                         "threshold_sub": m["threshold_sub"], **{k: m[k] for k in (
                             "seen_super_acc", "novel_super_acc", "seen_sub_acc", "novel_sub_acc", "objective",
                             f"auroc_super_{score}", f"auroc_sub_{score}")}})
            rows[-1]["auroc_super"] = rows[-1].pop(f"auroc_super_{score}")
            rows[-1]["auroc_sub"] = rows[-1].pop(f"auroc_sub_{score}")
    return rows


def trainable(sampled: dict, *, sweep: SweepConfig, data: Dataset) -> None:
    """Ray's only contact with the trainer: restore the checkpoint, call fit, forward each report."""
    from ray import tune

    from .train import fit, load_checkpoint, resolve_device

    cfg = sweep.train_config(sampled)
    device = resolve_device(cfg.device)
    extra = {"device": "cpu" if device.type == "cpu" else f"cuda:{_cuda_name(device)}",
             "node": socket.gethostname(), "node_id": _node_id()}
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_checkpoint(Path(d) / "checkpoint.pt")
    cache = _run_cache(sweep, cfg)

    def report(m: dict, save, out) -> None:
        _report(sweep, {**m, **extra}, out, save)
        if cache is not None and cache.owner:
            cache.store(m, out, save)

    if resume is None and cache is not None:
        resume = _replay(cache, cfg, sweep, extra)
        if resume == "done":
            return
    try:
        if cache is not None:
            cache.acquire()
        fit(cfg, data, report, resume=resume, scores=_scores(sweep))
    finally:
        if cache is not None:
            cache.release()


def _scores(sweep: SweepConfig) -> tuple[str, ...]:
    from .train import ALL_SCORES

    return tuple(dict.fromkeys((*ALL_SCORES, *sweep.novelty.scores)))


def _report(sweep: SweepConfig, m: dict, out, save) -> None:
    from ray import tune

    rows = threshold_rows(out, out.space, sweep.novelty.scores, sweep.novelty.thresholds)
    with tempfile.TemporaryDirectory() as d:
        if save is not None:
            save(Path(d))
        tune.report({**_finite(m, sweep.scheduler), "thresholds_json": json.dumps(rows)},
                    checkpoint=tune.Checkpoint.from_directory(d) if save is not None else None)


def _run_cache(sweep: SweepConfig, cfg):
    """A shared-run cache when the sweep samples only-novelty keys and results live on a shared filesystem."""
    if not sweep.threshold_only_keys or "://" in sweep.storage:
        return None
    from .runcache import RunCache

    return RunCache(Path(sweep.storage) / sweep.name / "shared_runs", cfg)


def _replay(cache, cfg, sweep: SweepConfig, extra: dict):
    """Report the cached epochs re-scored with this trial's novelty keys; returns the checkpoint to go on from
    ('done' when the cache already covers every epoch, None when there is nothing usable)."""
    import torch

    from .metrics import evaluate
    from .train import load_checkpoint

    epochs = [e for e in cache.epochs() if e <= cfg.epochs]
    ckpt_path = cache.checkpoint()
    if not epochs or epochs != list(range(1, len(epochs) + 1)) or ckpt_path is None:
        return None
    ckpt = load_checkpoint(ckpt_path)
    if int(ckpt["epoch"]) != epochs[-1]:  # written mid-epoch by a killed trial: train afresh
        return None
    history = []
    for e in epochs:
        train_m, out = cache.load(e)
        m = {**train_m, **evaluate(out, out.space, cfg.novelty_score, cfg.threshold, _scores(sweep)),
             "epoch_time": 0.0, "replayed": True}
        history.append(m)
        save = None
        if e == epochs[-1]:  # the checkpoint as this trial's own: its config and its (re-scored) history
            ckpt = {**ckpt, "config": cfg.to_dict(), "history": list(history)}
            save = lambda p, _c=ckpt: torch.save(_c, Path(p) / "checkpoint.pt")  # noqa: E731
        _report(sweep, {**m, **extra}, out, save)
    return "done" if epochs[-1] >= cfg.epochs else ckpt


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


def _cuda_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device)


def _finite(m: dict, sched) -> dict:
    """NaN (e.g. novel accuracy without novel images) becomes None; the scheduler's metric, which Tune must
    compare, becomes the worst value for its mode instead."""
    worst = -math.inf if sched.mode == "max" else math.inf
    return {k: ((worst if k == sched.metric else None) if isinstance(v, float) and math.isnan(v) else v)
            for k, v in m.items()}


QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the old reporter prints nothing: our progress line instead
    "RAY_SCHEDULER_EVENTS": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files: Parquet is the record
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


class ResultsWriter(Callback):
    """Tune callback: trials / epochs / thresholds Parquet, rewritten atomically after every report.

    State is reloaded from storage in `setup`, so a restored sweep appends to what is already there.
    """

    def __init__(self, storage: Storage, sweep: SweepConfig, progress_every: float = 5.0):
        self.storage, self.sweep, self.every = storage, sweep, progress_every
        self.trials: dict[str, dict] = {}
        self.epochs: dict[tuple, dict] = {}
        self.thresholds: dict[tuple, dict] = {}
        self.t0 = self.last_print = time.time()
        self.started: dict[str, float] = {}
        self._ctx: dict[str, dict] = {}
        super().__init__()

    # -- Tune hooks (the names and signatures Tune calls) --
    def setup(self, **info) -> None:
        self.t0 = time.time()
        for name, attr, key in (("trials.parquet", "trials", ("trial_id",)),
                                ("epochs.parquet", "epochs", ("trial_id", "epoch")),
                                ("thresholds.parquet", "thresholds", ("trial_id", "epoch", "score", "threshold"))):
            if self.storage.exists(name):
                df = self.storage.read_table(name)
                setattr(self, attr, {tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]: r
                                     for r in df.to_dict("records")})

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.time()
        row = self._trial_row(trial)
        row.update(status="running", wall_s_before=_num(row.get("wall_s"), 0.0))
        self._flush()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A failed attempt that `max_failures` retries from the last checkpoint: keep its time and error."""
        row = self._trial_row(trial)
        row.update(retries=int(_num(row.get("retries"), 0)) + 1, error=_error_text(trial))
        if trial.trial_id in self.started:
            row["wall_s"] = _num(row.get("wall_s_before"), 0.0) + time.time() - self.started.pop(trial.trial_id)
        self._flush()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        tid, epoch = trial.trial_id, int(result["epoch"])
        rows = json.loads(result.pop("thresholds_json", "[]"))
        metrics = {k: v for k, v in result.items() if _is_metric(k, v)}
        ctx = self._context(trial)  # every row carries its resolved config, seed and code version
        self.epochs[(tid, epoch)] = {"trial_id": tid, **ctx, **metrics, "time": time.time()}
        for r in rows:
            self.thresholds[(tid, epoch, r["score"], r["threshold"])] = {
                "trial_id": tid, "epoch": epoch, **r, **{k: v for k, v in ctx.items() if k != "threshold"},
                "trial_threshold": ctx["threshold"]}
        row = self._trial_row(trial)
        row.update(status="running", epochs_run=epoch, node=result.get("node"), node_id=result.get("node_id"),
                   device=result.get("device"))
        self._summarise(row)
        self._flush()
        self._progress()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._trial_row(trial)
        planned = self.sweep.train_config(trial.config).epochs
        ran = int(_num(row.get("epochs_run"), 0))
        row["status"] = "completed" if ran >= planned else ("stopped" if ran else "errored")
        if not ran:
            row["error"] = row.get("error") or "finished without reporting an epoch"
        self._close(trial, row)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._trial_row(trial)
        row.update(status="errored", error=_error_text(trial))
        self._close(trial, row)

    def on_experiment_end(self, trials, **info) -> None:
        for row in self.trials.values():
            if row["status"] in ("running", "pending"):
                row["status"] = "interrupted"
        self._flush()

    # -- helpers --
    def _context(self, trial) -> dict:
        if trial.trial_id not in self._ctx:
            self._ctx[trial.trial_id] = config_columns(self.sweep.train_config(trial.config))
        return self._ctx[trial.trial_id]

    def _trial_row(self, trial) -> dict:
        tid = trial.trial_id
        if tid not in self.trials:
            cfg = self.sweep.train_config(trial.config)
            self.trials[tid] = {"trial_id": tid, "trial_dir": os.path.basename(str(trial.path or "")),
                                "status": "pending", "error": None, "epochs_run": 0, "retries": 0,
                                **config_columns(cfg), "wall_s": 0.0, "compute_s": 0.0}
        return self.trials[tid]

    def _summarise(self, row: dict) -> None:
        tid = row["trial_id"]
        eps = sorted((e for (t, _), e in self.epochs.items() if t == tid), key=lambda e: e["epoch"])
        metric, sign = self.sweep.scheduler.metric, (1 if self.sweep.scheduler.mode == "max" else -1)
        best = max(eps, key=lambda e: sign * _num(e.get(metric), -sign * math.inf))
        last = eps[-1]
        row.update({f"final_{k}": v for k, v in last.items() if k not in ("trial_id", "epoch", "time")})
        row.update({f"best_{metric}": best.get(metric), "best_epoch": best["epoch"],
                    "compute_s": sum(_num(e.get("epoch_time"), 0.0) for e in eps)})
        if tid in self.started:
            row["wall_s"] = _num(row.get("wall_s_before"), 0.0) + time.time() - self.started[tid]

    def _close(self, trial, row: dict) -> None:
        if trial.trial_id in self.started:
            row["wall_s"] = _num(row.get("wall_s_before"), 0.0) + time.time() - self.started.pop(trial.trial_id)
            row["wall_s_before"] = row["wall_s"]
        self._flush()
        self._progress(force=True)

    def _flush(self) -> None:
        self.storage.write_table(list(self.trials.values()), "trials.parquet")
        if self.epochs:
            self.storage.write_table(list(self.epochs.values()), "epochs.parquet")
        if self.thresholds:
            self.storage.write_table(list(self.thresholds.values()), "thresholds.parquet")

    def _progress(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_print < self.every:
            return
        self.last_print = now
        print(progress_line(self.trials, self.sweep, now - self.t0), flush=True)


def progress_line(trials: dict, sweep: SweepConfig, elapsed: float) -> str:
    from collections import Counter

    c = Counter(r["status"] for r in trials.values())
    metric = sweep.scheduler.metric
    scored = [r for r in trials.values() if r.get(f"best_{metric}") is not None]
    text = (f"[{elapsed:6.0f}s] {c['running']} running, {c['completed']} completed, {c['stopped']} stopped early, "
            f"{c['errored']} errored")
    if scored:
        sign = 1 if sweep.scheduler.mode == "max" else -1
        b = max(scored, key=lambda r: sign * r[f"best_{metric}"])
        keys = ", ".join(f"{k}={_short(b[k])}" for k in dict.fromkeys(("backbone", "depth", *sweep.space)) if k in b)
        text += f" | best {metric} {b[f'best_{metric}']:.4f} ({b['trial_id']}: {keys})"
    return text


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _is_metric(k: str, v) -> bool:
    return (isinstance(v, (int, float, str)) or v is None) and k not in (
        "config", "done", "trial_id", "experiment_id", "date", "pid", "hostname", "node_ip", "experiment_tag",
        "timesteps_total", "episodes_total", "training_iteration", "time_this_iter_s", "time_total_s",
        "timestamp", "checkpoint_dir_name", "should_checkpoint", "time_since_restore", "iterations_since_restore")


def _num(v, default=-math.inf) -> float:
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _error_text(trial) -> str:
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "unknown error"


def prepare_data(sweep: SweepConfig) -> Dataset:
    """Validate and decode the sweep's dataset once, on the driver (`synthetic` is generated and cached)."""
    if sweep.data != "synthetic":
        return load_dataset(sweep.data)
    import dataclasses
    import hashlib

    from .data import cache_dir
    from .synthetic import GENERATOR_VERSION, SynthSpec, synthesize

    spec = SynthSpec(**dataclasses.asdict(sweep.synthetic))
    key = hashlib.sha256(f"{GENERATOR_VERSION}|{spec!r}".encode()).hexdigest()[:16]
    root = cache_dir() / "synthetic" / key
    if not (root / ".complete").exists():
        tmp = root.with_name(f"{key}.{os.getpid()}.tmp")
        synthesize(tmp, spec)
        (tmp / ".complete").touch()
        os.makedirs(root.parent, exist_ok=True)
        if not root.exists():
            os.replace(tmp, root)
    return load_dataset(root)


def start_ray(address: str | None) -> None:
    import logging

    import ray

    os.environ.update({k: os.environ.get(k, v) for k, v in QUIET_ENV.items()})
    # the result grid looks for per-trial JSON logs we do not write (Parquet is the record)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # an embedded, loopback-only Ray needs no token
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # single node: no external IP probe
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def check_cluster(sweep: SweepConfig, storage: Storage) -> None:
    """Refuse what would hang or lose results: GPUs the cluster lacks, node-local storage across hosts."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": sweep.resources.cpu, "GPU": sweep.resources.gpu}
    for res, n in need.items():
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


def build_tuner(sweep: SweepConfig, storage: Storage, data: Dataset, resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    train_fn = tune.with_resources(tune.with_parameters(trainable, sweep=sweep, data=data),
                                   {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    if resume:
        if not tune.Tuner.can_restore(storage.ray_path):
            raise SweepError(f"nothing to resume at {storage.exp}: no sweep named {storage.name!r} was started there")
        return tune.Tuner.restore(storage.ray_path, train_fn, resume_unfinished=True, resume_errored=False)
    sc, s = sweep.scheduler, sweep.search
    if s.algo == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed))
    else:
        search = BasicVariantGenerator(random_state=s.seed, max_concurrent=sweep.max_concurrent)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=sweep.max_epochs, grace_period=sc.grace_period,
                               reduction_factor=sc.reduction_factor) if sc.kind == "asha" else FIFOScheduler())
    return tune.Tuner(
        train_fn, param_space=param_space(sweep),
        tune_config=tune.TuneConfig(metric=sc.metric, mode=sc.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=sweep.num_samples, reuse_actors=True,
                                    max_concurrent_trials=(sweep.max_concurrent or None) if s.algo == "optuna" else None),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=storage.uri, verbose=0, callbacks=[ResultsWriter(storage, sweep)],
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def run_sweep(sweep: SweepConfig, address: str | None = None, resume: bool = False,
              resume_cmd: str = "") -> "pandas.DataFrame":  # noqa: F821
    """Run (or resume) a sweep; returns trials.parquet as a DataFrame. Raises SweepError / DataError."""
    storage = Storage(sweep.storage, sweep.name)
    if resume and not storage.exists("sweep.yaml"):
        raise SweepError(f"nothing to resume at {storage.exp}: no sweep named {sweep.name!r} was started there")
    if not resume and storage.exists("trials.parquet"):
        raise SweepError(f"{storage.exp} already holds a sweep named {sweep.name!r}: pass --resume to continue "
                         "it, or --name NEW to start another")
    t0 = time.time()
    data = prepare_data(sweep)
    print(f"data: {len(data)} images decoded once ({time.time() - t0:.1f} s); results: {storage.exp}", flush=True)
    start_ray(address)
    sweep.storage = storage.uri  # absolute: trials run in other working directories
    try:
        check_cluster(sweep, storage)
        if not resume:  # a resumed sweep keeps the definition it started with
            storage.write_text("sweep.yaml", _sweep_yaml(sweep))
        tuner = build_tuner(sweep, storage, data, resume)
        tuner.fit()
    finally:
        import ray

        ray.shutdown()
    trials = storage.read_table("trials.parquet") if storage.exists("trials.parquet") else None
    return _conclude(trials, sweep, storage, resume_cmd, time.time() - t0)


def _conclude(trials, sweep: SweepConfig, storage: Storage, resume_cmd: str, elapsed: float):
    if trials is None or trials.empty:
        raise SweepError("no trial reported anything")
    counts = trials.status.value_counts().to_dict()
    print(f"sweep {sweep.name!r} finished in {elapsed:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts.get("interrupted") or len(trials) < _expected_trials(sweep):
        print(f"interrupted: resume with\n  {resume_cmd or 'hier-tl sweep SWEEP.yaml --name ' + sweep.name} --resume",
              flush=True)
        raise KeyboardInterrupt
    if (trials.status == "errored").all():
        errs = "\n".join(f"  {r.trial_id}: {r.error}" for r in trials.itertuples())
        raise SweepError(f"every trial failed:\n{errs}")
    return trials


def _expected_trials(sweep: SweepConfig) -> int:
    if sweep.search.algo == "optuna":
        return sweep.num_samples
    n = 1
    for spec in sweep.space.values():
        (kind, args), = spec.items()
        if kind == "grid" or sweep.search.algo == "grid":
            n *= len(args)
    return n * sweep.num_samples


def _sweep_yaml(sweep: SweepConfig) -> str:
    import dataclasses

    import yaml

    return yaml.safe_dump({**dataclasses.asdict(sweep), **code_version()}, sort_keys=False)
