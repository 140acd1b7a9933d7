"""Sweep files: typed, strict, with a `smoke` variant. No Ray here (tune.py turns this into a Ray Tune run).

A sweep file::

    name: search                 # results go to <storage>/<name>/
    data: ../shared/data/nndl64  # a dataset folder, or `synthetic` (generated from `synthetic:`)
    base: {epochs: 10, ...}      # TrainConfig keys shared by every trial
    space:                       # TrainConfig keys to search: one sampler each
      lr: {loguniform: [1.0e-4, 1.0e-2]}
      backbone: {choice: [cnn, resnet18]}
      backbone+depth: {grid: [[cnn, full], [resnet18, linear]]}   # keys that vary together
    search: {algo: optuna, seed: 0}          # optuna | random | grid
    scheduler: {kind: asha, metric: objective, mode: max, grace_period: 1, reduction_factor: 3}
    num_samples: 20
    resources: {cpu: 1, gpu: 0.25}
    max_concurrent: 4
    storage: results             # a local folder or s3://bucket/prefix, gs://...
    novelty: {scores: [msp, energy, maxlogit], thresholds: [0.5, 0.6, 0.7, "tpr:0.95"]}
    smoke: {num_samples: 2, base: {epochs: 2}}   # overrides for --smoke
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from ..core.config import (
    Check,
    ConfigError,
    Named,
    OneOf,
    Range,
    Threshold,
    apply_overrides,
    from_dict,
)
from ..core.fileio import check_name
from ..core.yamlio import read_yaml
from ..data.synthetic import SynthSpec
from ..train.registries import SCORES
from ..train.train_config import (
    NOVELTY_KEYS,
    PROTOCOL_KEYS,
    TrainConfig,
    protocol_label,
)
from .space import SAMPLERS, SEARCHERS

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def _gpu(v: float, key: str) -> None:
    if v > 1 and v != int(v):
        raise ConfigError(f"{key}: {v:g} GPUs: a trial takes a fraction of one GPU (<= 1) or whole GPUs")


@dataclass
class SearchConfig:
    algo: Annotated[str, Named(SEARCHERS)] = "optuna"  # optuna (TPE) | random | grid
    seed: Annotated[int, Range(0, 2**32 - 1)] = 0  # sampler seed


@dataclass
class SchedulerConfig:
    kind: Annotated[str, OneOf(("asha", "none"))] = "asha"  # asha (early stopping) | none
    metric: str = "objective"  # any reported metric
    mode: Annotated[str, OneOf(("max", "min"))] = "max"
    grace_period: Annotated[int, Range(1, 10_000)] = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: Annotated[int, Range(2, 1000)] = 3  # ASHA keeps 1/reduction_factor of trials at each rung
    max_epochs: Annotated[int, Range(0, 10_000)] = 0  # ASHA's horizon; 0: the most epochs any trial gets


@dataclass
class Resources:
    cpu: Annotated[float, Range(0, 1024, lo_open=True)] = 1.0  # CPUs per trial
    gpu: Annotated[float, Range(0, 64), Check(_gpu)] = 0.0  # GPUs per trial; fractions share a GPU between trials


@dataclass
class NoveltySweep:
    scores: list = field(default_factory=lambda: ["msp", "maxlogit", "energy"])  # written to thresholds.parquet
    thresholds: list = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, "tpr:0.95"])  # ditto


@dataclass
class SweepConfig:
    name: str = "sweep"  # results go to <storage>/<name>/
    data: str = "synthetic"  # dataset folder, or `synthetic`
    synthetic: SynthSpec = field(default_factory=SynthSpec)  # used when data is `synthetic`
    base: dict = field(default_factory=dict)  # TrainConfig keys for every trial
    space: dict = field(default_factory=dict)  # TrainConfig key -> {sampler: args}
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    num_samples: Annotated[int, Range(1, 1_000_000)] = 1  # trials to sample (grid search: repeats of the grid)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: Annotated[int | None, Range(1, 100_000)] = None  # trials at once; unset: as the resources allow
    max_failures: Annotated[int, Range(0, 100)] = 0  # retry a failed trial up to this many times, from its last
    # checkpoint (Ray's -1, "forever", is refused: a trial that always fails would never let the sweep end)
    storage: str = "results"  # local folder or object-store URI
    novelty: NoveltySweep = field(default_factory=NoveltySweep)
    decide_on: dict = field(default_factory=dict)  # the validation protocol that decides (`best`, `predict`)
    # when the space spans several: protocol keys, e.g. {holdout_subclasses: 3, holdout_superclasses: 1}
    smoke: dict = field(default_factory=dict)  # overrides applied by --smoke

    def validate(self) -> None:
        """Everything that can be checked without Ray and without data: nothing trains before a mistake is found."""
        check_name(self.name, "name")
        from_dict(TrainConfig, self.base, "base.")
        for key, spec in self.space.items():
            _check_sampler(key, spec)
        SEARCHERS.get(self.search.algo, where="search.algo")
        meta = SEARCHERS.meta(self.search.algo)
        grid_keys = [k for k, s in self.space.items() if "grid" in s]
        if grid_keys and not meta.get("grid"):
            raise ConfigError(f"space.{grid_keys[0]}: 'grid' needs search.algo grid or random, not {self.search.algo}")
        if meta.get("only_lists") and any("grid" not in s and "choice" not in s for s in self.space.values()):
            raise ConfigError(f"search.algo {self.search.algo}: every space entry must be 'grid' or 'choice'")
        if self.scheduler.kind == "asha" and self.scheduler.grace_period > self.max_epochs:
            raise ConfigError(f"scheduler.grace_period: {self.scheduler.grace_period} epochs is beyond the "
                              f"{self.max_epochs} epoch(s) trials get here (base.epochs, or the smoke section "
                              "under --smoke): lower it, or give trials more epochs")
        for i, t in enumerate(self.novelty.thresholds):
            Threshold.per_level(t, f"novelty.thresholds[{i}]")
        for i, s in enumerate(self.novelty.scores):
            SCORES.get(s, where=f"novelty.scores[{i}]")
        self._check_metric()
        self._check_decision()
        if meta.get("needs_space") and not self.space:
            raise ConfigError(f"space: search.algo {self.search.algo} needs at least one key to search "
                              "(or use search.algo random with num_samples for repeats)")

    def check_memory(self, n_images: int, side: int, host_bytes: int, gpu_bytes: int | None,
                     shared: bool = False) -> None:
        """Refuse trials that could not fit: the dataset as uint8 plus the activations of one training batch
        (batch x 3 x image_size^2 x 4 bytes x the backbone's `act_mult`, a measured rough factor), for every
        trial that may run at once on a node. `shared`: the dataset is a mapped store, which the trials of a
        node share through the page cache (and which a GPU takes only where it fits): activations alone count.
        An estimate meant to catch typos (image_size 2240), not to pack."""
        from ..train.registries import BACKBONES

        worst = 0
        for cfg in self.extreme_configs():
            size = cfg.image_size or side
            act = max(cfg.batch_size, cfg.eval_batch_size // 4) * 3 * size * size * 4 * \
                BACKBONES.meta(cfg.backbone).get("act_mult", 160)
            worst = max(worst, act)
        data = 0 if shared else n_images * 3 * side * side
        on_gpu = self.resources.gpu > 0 and gpu_bytes
        per_node = max(1, int(1 / self.resources.gpu)) if on_gpu else max(1, int(os.cpu_count() // self.resources.cpu))
        per_node = min(per_node, self.max_concurrent or per_node)
        need, have = per_node * (worst + data), gpu_bytes if on_gpu else host_bytes
        if need > have:
            raise ConfigError(f"memory: {per_node} trial(s) at once would need about {need / 2**30:.1f} GiB "
                              f"({'GPU' if on_gpu else 'host'} memory: {have / 2**30:.1f} GiB): lower base.batch_size "
                              "or image_size, or set max_concurrent / resources so fewer trials share a machine")

    def extreme_configs(self) -> list[TrainConfig]:
        """The base config with each space key at its largest batch / image size / backbone choice."""
        out = [self.train_config({})]
        for key, spec in self.space.items():
            (kind, args), = spec.items()
            values = args if SAMPLERS.get(kind).lists else args[1:2]
            out += [self.train_config({key: int(v) if kind == "randint" else v}) for v in values
                    if set(key.split("+")) & {"batch_size", "eval_batch_size", "image_size", "backbone"}]
        return out

    def _check_metric(self) -> None:
        from ..train.metrics import reported_metrics

        names = reported_metrics(self.scores_reported())
        if self.scheduler.metric not in names:
            close = sorted(n for n in names if self.scheduler.metric.split("_")[0] in n)[:8]
            raise ConfigError(f"scheduler.metric: {self.scheduler.metric!r} is not a metric trials report; e.g. "
                              f"{', '.join(close or sorted(names)[:12])}")

    def protocols(self) -> list[str] | None:
        """The validation protocols (`protocol_label`) this sweep's trials can have, in the order of the
        space; None when a protocol key is sampled from a range (then any value can come up)."""
        combos = [{}]
        for key, spec in self.space.items():
            parts = key.split("+")
            if not set(parts) & set(PROTOCOL_KEYS):
                continue
            (kind, args), = spec.items()
            if not SAMPLERS.get(kind).lists:
                return None
            values = [dict(zip(parts, a)) if len(parts) > 1 else {key: a} for a in args]
            combos = [{**c, **v} for c in combos for v in values]
        return list(dict.fromkeys(protocol_label(self.train_config(c)) for c in combos))

    @property
    def decision_label(self) -> str | None:
        """The protocol that decides (`decide_on`), or the only one the sweep has; None when it spans several
        and names none."""
        if self.decide_on:
            return protocol_label(from_dict(TrainConfig, {**self.base, **self.decide_on}))
        found = self.protocols()
        return found[0] if found and len(found) == 1 else None

    def _check_decision(self) -> None:
        bad = sorted(set(self.decide_on) - set(PROTOCOL_KEYS))
        if bad:
            raise ConfigError(f"decide_on: {', '.join(bad)} is not a validation-protocol key; those are "
                              f"{', '.join(PROTOCOL_KEYS)}")
        found = self.protocols()
        if self.decide_on and found is not None and self.decision_label not in found:
            raise ConfigError(f"decide_on: no trial of this sweep has the protocol '{self.decision_label}'; "
                              f"its protocols: {'; '.join(found)}")

    def scores_reported(self) -> tuple[str, ...]:
        """Novelty scores whose AUROC / FPR@95 every epoch reports: the sweep's grid and every trial's own."""
        own = [self.base.get("novelty_score", TrainConfig.novelty_score)]
        for key, spec in self.space.items():
            if "novelty_score" in key.split("+"):
                (kind, args), = spec.items()
                i = key.split("+").index("novelty_score")
                own += [a[i] if "+" in key else a for a in args]
        return tuple(dict.fromkeys((*self.novelty.scores, *own)))

    @property
    def max_epochs(self) -> int:
        """ASHA's horizon: the scheduler's, else the longest `epochs` any trial can get."""
        values = [self.train_config({}).epochs]
        for key, spec in self.space.items():
            parts = key.split("+")
            if "epochs" in parts:
                (kind, args), = spec.items()
                if kind in ("choice", "grid"):
                    values += [v[parts.index("epochs")] if len(parts) > 1 else v for v in args]
                else:
                    values.append(args[1])
        return self.scheduler.max_epochs or int(max(values))

    def train_config(self, sampled: dict[str, Any]) -> TrainConfig:
        return from_dict(TrainConfig, {**self.base, **expand(sampled)})

    @property
    def threshold_only_keys(self) -> list[str]:
        return [k for k in self.space if k in NOVELTY_KEYS]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)




def expand(sampled: dict[str, Any]) -> dict[str, Any]:
    """Composite keys `a+b: [va, vb]` (several keys that vary together) -> {a: va, b: vb}."""
    out = {}
    for k, v in sampled.items():
        if "+" in k:
            out.update(zip(k.split("+"), v))
        else:
            out[k] = v
    return out


def _check_sampler(key: str, spec: Any) -> None:
    where = f"space.{key}"
    parts = key.split("+")
    bad = [p for p in parts if p not in TRAIN_FIELDS]
    if bad:
        raise ConfigError(f"{where}: {bad[0]!r} is not a TrainConfig key")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one sampler, e.g. {{choice: [a, b]}} (samplers: {', '.join(SAMPLERS)})")
    (kind, args), = spec.items()
    sampler = SAMPLERS.get(kind, where=where)
    n = sampler.args
    if not isinstance(args, list) or (n == "list" and not args) or (n != "list" and len(args) != n):
        raise ConfigError(f"{where}.{kind}: expected {'a non-empty list' if n == 'list' else f'[{n} numbers]'}")
    if len(parts) > 1 and (n != "list" or any(not isinstance(v, list) or len(v) != len(parts) for v in args)):
        raise ConfigError(f"{where}: a composite key takes choice/grid of [{', '.join(parts)}] lists")
    if n != "list":
        sampler.check(where, args)
    for v in args if n == "list" else args[:2]:  # each choice (each bound) must make a valid TrainConfig
        try:
            from_dict(TrainConfig, expand({key: int(v) if kind == "randint" else v}))
        except ConfigError as e:
            raise ConfigError(f"{where}.{kind}: {e}") from None


def load_sweep(path: Path | str, smoke: bool = False, overrides: list[str] | None = None,
               name: str | None = None, storage: str | None = None, data: str | None = None) -> SweepConfig:
    """Read a sweep file; --smoke merges its `smoke:` section; --set key=value (dotted) applies last."""
    raw = read_yaml(path)
    if smoke:
        raw = deep_merge(raw, raw.get("smoke") or {})
    raw = apply_overrides(raw, overrides)
    for key, value in (("name", name), ("storage", storage), ("data", data)):
        if value:
            raw[key] = value
    return from_dict(SweepConfig, raw)


def deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space" else v
    return out
