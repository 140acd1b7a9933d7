"""The Ray Tune trainable: a thin wrapper around `train.fit`.

A trial sees a `TrialSpec` (what it needs of its sweep, never the sweep file itself), turns its sampled
values into a `TrainConfig`, and runs `run_trial(config, data, reporter)`, which is Ray-free. The
`TuneReporter` is the trial's only contact with Ray: its report call, the checkpoint Tune restores it from,
and the phases it announces to the driver's progress line (`progress.ProgressBoard`).

Every report carries the epoch's metrics plus, as `thresholds_json`, the validation metrics of each novelty
score x threshold of the sweep's `novelty` grid, computed post hoc from the logits: thresholds never cost
a retraining. Trials that differ only in novelty keys replay one shared training run (`results.runcache`).

A trial is sent its dataset by reference (`DatasetRef`: labels, names and the store's key) and maps the
decoded images from its machine's store, which every trial there shares; on a cluster, a machine that
lacks the store downloads it (once) from the sweep's results storage (`StorageShare`), where the driver
put it, as it does reference features another machine computed.
"""

from __future__ import annotations

import json
import math
import socket
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..core.config import from_dict
from ..core.errors import DataError
from ..data.dataset import Dataset, DatasetRef, load_dataset
from ..data.store import IMAGES, META, StoreRef, obtain
from ..results.runcache import RunCache
from ..results.storage import Storage
from ..train import checkpoint
from ..train.folds import mean_rows
from ..train.metrics import evaluate, threshold_rows
from ..train.train_config import TrainConfig
from .sweep_config import expand


@dataclass(frozen=True)
class TrialSpec:
    """What a trial needs of its sweep, and nothing more."""

    base: dict  # TrainConfig keys every trial shares; a trial's sampled keys go on top
    scores: tuple = ()  # AUROC / FPR@95 of these novelty scores on every report
    grid_scores: tuple = ()  # the novelty grid, re-scored into each report's `thresholds_json`
    grid_thresholds: tuple = ()
    metric: str = "objective"  # the scheduler's metric (a NaN there becomes the worst value for `mode`)
    mode: str = "max"
    shared_runs: str | None = None  # local folder of the shared-run cache (from `Storage`); None: off
    progress: str | None = None  # name of the driver's progress actor; None: no phases announced
    share: str | None = None  # URI of the sweep folder that shares the caches between machines; None: one machine

    def config(self, sampled: dict) -> TrainConfig:
        return from_dict(TrainConfig, {**self.base, **expand(sampled)})


def trainable(sampled: dict, *, spec: TrialSpec, data: Dataset | DatasetRef) -> None:
    """Ray's entry point: the sampled config, the shared data, a reporter; the rest is `run_trial`."""
    from ray import tune

    cfg = spec.config(sampled)
    reporter = TuneReporter(spec, tune.get_context().get_trial_id() or "", cfg)
    data = open_data(data, StorageShare(spec.share) if spec.share else None, reporter.phase)
    cache = RunCache(spec.shared_runs, cfg) if spec.shared_runs and cfg.folds == 1 else None  # fold 0 only
    run_trial(cfg, data, reporter, spec.scores, cache)


def run_trial(cfg: TrainConfig, data: Dataset, reporter, scores: tuple = (), cache: RunCache | None = None) -> None:
    """Resume from the reporter's checkpoint, or replay the shared run, then `fit`, forwarding every report.
    No Ray here: `reporter` has `restored()`, `__call__(metrics, outputs, state, fold_outputs)` and `phase()`."""
    from ..train.trainer import fit

    resume = reporter.restored()
    if resume is None and cache is not None:
        resume = cache.replay(cfg, lambda out: evaluate(out, out.space, cfg.novelty_score, cfg.threshold, scores),
                              reporter)
        if resume is not None and int(resume["epoch"]) >= cfg.epochs:
            return

    def report(r) -> None:
        reporter(r.metrics, r.outputs, r.state(), r.fold_outputs)
        if cache is not None and cache.owner:
            cache.store(r)

    try:
        if cache is not None:
            cache.acquire()
        fit(cfg, data, report, resume=resume, scores=scores, progress=reporter.phase)
    finally:
        if cache is not None:
            cache.release()


def open_data(data: Dataset | DatasetRef, share: StorageShare | None, phase: Callable) -> Dataset:
    """The trial's dataset: as sent when it came whole, else mapped from this machine's store, which is first
    downloaded from `share` (once per machine) where the machine lacks it, or else decoded again from the
    dataset's folder. DataError when that folder no longer holds the images the sweep decoded."""
    if isinstance(data, Dataset):
        return data
    phase("mapping the dataset", 0, 0)

    def fetch(folder: Path) -> bool:
        if share is not None and share.fetch_store(data.store, folder, phase):
            return True
        phase("decoding the dataset", 0, 0)
        return load_dataset(data.root, data.store.shape[-1]).store == data.store

    if not obtain(data.store, fetch):
        raise DataError([f"{data.root}: its images changed since the sweep decoded them, and their decoded store "
                         f"{data.store.key} is neither on this machine nor in the sweep's storage: restore the "
                         "images, or start a new sweep"])
    return replace(data, share=share).open()


@dataclass(frozen=True)
class StorageShare:
    """Caches shared between the machines of a sweep through its results storage, as `<sweep>/cache/<rel>`:
    the decoded dataset (`<key>/images.npy`, then `<key>/meta.json`) and reference features
    (`reference/<key>.npy`). A `data.store.Share`."""

    uri: str  # the sweep folder

    def fetch(self, rel: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> bool:
        storage = Storage.open(self.uri)
        if storage.size(f"cache/{rel}") is None:
            return False
        storage.download(f"cache/{rel}", dest, progress)
        return True

    def publish(self, rel: str, src: Path) -> None:
        storage = Storage.open(self.uri)
        if storage.size(f"cache/{rel}") != Path(src).stat().st_size:
            storage.upload(f"cache/{rel}", src)

    def publish_store(self, ref: StoreRef) -> None:
        """Share this machine's store `ref` (its images first: `meta.json` marks it complete)."""
        for name in (IMAGES, META):
            self.publish(f"{ref.key}/{name}", ref.folder / name)

    def fetch_store(self, ref: StoreRef, folder: Path, phase: Callable) -> bool:
        """Download the store `ref` into `folder`, saying so as the phase "downloading the dataset cache (MB)";
        False when the storage does not hold it."""
        def mb(done: int, total: int) -> None:
            phase("downloading the dataset cache (MB)", done >> 20, total >> 20)

        meta = folder / f".{META}.shared"
        if not (self.fetch(f"{ref.key}/{META}", meta) and self.fetch(f"{ref.key}/{IMAGES}", folder / IMAGES, mb)):
            return False  # (meta.json, shared last, says the images were shared whole)
        meta.replace(folder / META)
        return True


class TuneReporter:
    """Forwards reports to Tune; each checkpoint also carries every report so far (`reported.json`), so
    a driver killed before recording them loses nothing."""

    def __init__(self, spec: TrialSpec, trial_id: str, cfg: TrainConfig):
        from ..train.trainer import resolve_device

        self.spec, self.trial_id, self.reported = spec, trial_id, []
        self.info = _where(resolve_device(cfg.device))
        self.board = _board(spec.progress)

    def restored(self) -> dict | None:
        """The checkpoint Tune restores this trial from (after a retry or `--resume`), or None."""
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            p = Path(d) / "reported.json"
            self.reported = json.loads(p.read_text()) if p.is_file() else []
            return checkpoint.load(Path(d) / "checkpoint.pt")

    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        """Tell the driver what this trial is doing (mapping or downloading the dataset, reference features n/N,
        training, evaluating)."""
        if self.board is not None:
            self.board.update.remote(self.trial_id, name, done, total)

    def __call__(self, m: dict, out, state: dict | None, fold_outputs: list | None = None) -> None:
        from ray import tune

        s = self.spec
        rows = mean_rows([threshold_rows(o, s.grid_scores, s.grid_thresholds) for o in (fold_outputs or [out])])
        result = {**_finite({**m, **self.info}, s.metric, s.mode), "thresholds_json": json.dumps(rows)}
        self.reported = [r for r in self.reported if r["epoch"] < m["epoch"]] + [result]
        with tempfile.TemporaryDirectory() as d:
            if state is not None:
                checkpoint.save(state, Path(d) / "checkpoint.pt")
                (Path(d) / "reported.json").write_text(json.dumps(self.reported))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d) if state is not None else None)


def _board(name: str | None) -> Any:
    """The driver's progress actor, or None (no driver board: phases are not announced)."""
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def _where(device) -> dict:
    """Where the trial runs, recorded with its results."""
    import ray
    import torch

    name = "cpu" if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name(device)}"
    return {"device": name, "node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()[:12]}


def _finite(m: dict, metric: str, mode: str) -> dict:
    """NaN (e.g. novel accuracy without novel images) becomes None; the scheduler's metric, which Tune must
    compare, becomes the worst value for its mode instead."""
    worst = -math.inf if mode == "max" else math.inf
    return {k: ((worst if k == metric else None) if isinstance(v, float) and math.isnan(v) else v)
            for k, v in m.items()}
