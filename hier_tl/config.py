"""Typed configuration: dataclasses loaded from YAML, strict about unknown keys and types.

`TrainConfig` is flat on purpose: every field is one sweepable key (`lr`, `backbone`, `mixup_alpha`...),
one `--set key=value` override and one column in the results tables.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .registry import BACKBONES, OPTIMIZERS, SCHEDULES, SCORES

DEPTHS = ("linear", "partial", "full")
PRECISIONS = ("auto", "bf16", "fp32")
NOVELTY_KEYS = ("threshold", "novelty_score")  # evaluated post hoc from saved outputs: never a reason to retrain


@dataclass(frozen=True)
class Threshold:
    """The threshold grammar, parsed once: a number, `tpr:P` (keep a fraction P of the seen validation
    images as seen, 0 < P <= 1) or `best` (maximise the mean of seen and novel accuracy)."""

    kind: str  # value | tpr | best
    value: float = math.nan

    @classmethod
    def parse(cls, spec: Any, key: str = "threshold") -> "Threshold":
        if isinstance(spec, Threshold):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool) and math.isfinite(spec):
            return cls("value", float(spec))
        text = spec.strip() if isinstance(spec, str) else None
        if text == "best":
            return cls("best")
        if text and text.startswith("tpr:") and _FLOAT.fullmatch(text[4:].strip()) and 0 < float(text[4:]) <= 1:
            return cls("tpr", float(text[4:]))
        if text and _FLOAT.fullmatch(text):
            return cls("value", float(text))
        raise ConfigError(f"{key}: {spec!r} is not a number, 'best' or 'tpr:P' (0 < P <= 1), or SUPER/SUB of those")

    def __str__(self) -> str:
        return {"value": lambda: f"{self.value:g}", "tpr": lambda: f"tpr:{self.value:g}",
                "best": lambda: "best"}[self.kind]()

    @classmethod
    def per_level(cls, spec: Any, key: str = "threshold") -> dict[str, "Threshold"]:
        """The rule of each level: one rule for both, or `SUPER/SUB`, the superclass level's rule then the
        subclass level's (`tpr:0.985/tpr:0.97`: keep 98.5% of seen superclasses, 97% of seen subclasses)."""
        if isinstance(spec, str) and "/" in spec:
            parts = spec.split("/")
            if len(parts) != 2:
                raise ConfigError(f"{key}: {spec!r} has {len(parts)} parts; per-level thresholds are SUPER/SUB")
            where = f"{key} {spec!r}"
            return {"super": cls.parse(parts[0], f"{where}, superclass"), "sub": cls.parse(parts[1], f"{where}, subclass")}
        rule = cls.parse(spec, key)
        return {"super": rule, "sub": rule}


@dataclass
class TrainConfig:
    # --- model ---
    backbone: str = "cnn"  # registry name: cnn | resnet18 | efficientnet_b0 | efficientnet_lite0
    weights: str = "none"  # none | imagenet | auto (imagenet where available) | PATH (weights_only load)
    depth: str = "full"  # fine-tuning depth: linear | partial | full (see models.py for what trains)
    image_size: int = 0  # side of the square input given to the backbone; 0 keeps the dataset's size
    proj_dim: int = 256  # width of the shared projection before the two heads
    dropout: float = 0.3  # dropout after the shared projection
    # --- optimisation ---
    epochs: int = 10  # training epochs
    batch_size: int = 64  # images per step
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # decoupled weight decay (AdamW) or L2 (SGD)
    momentum: float = 0.9  # SGD momentum / AdamW beta1
    schedule: str = "cosine"  # learning-rate schedule after warmup: cosine | constant
    warmup_epochs: float = 1.0  # linear warmup length, in epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    # --- augmentation (batched, on the device) ---
    hflip: bool = True  # random horizontal flip
    rotate_deg: float = 10.0  # random rotation in [-deg, +deg]
    jitter: float = 0.2  # brightness/contrast/saturation jitter strength
    translate: float = 0.0  # random shift of up to this fraction of the image side, per axis
    mixup_alpha: float = 0.0  # mixup Beta(alpha, alpha); 0 disables
    # --- validation split ---
    val_fraction: float = 0.1  # stratified by subclass
    holdout_subclasses: int = 0  # per superclass: seen only in validation, as novel subclasses
    holdout_superclasses: int = 0  # whole superclasses seen only in validation, as novel at both levels
    split_seed: int = 0  # seed of the split (kept apart from `seed` so trials share one split)
    folds: int = 1  # rotating validation: one model per fold, trained in lockstep; fold f moves the held-out
    # superclass(es) f places on and redraws the held-out subclasses; metrics are fold means (+ `<metric>_std`)
    # --- novelty ---
    novelty_score: str = "msp"  # registry name: msp | maxlogit | energy | knn | ... | pretrained_hier
    threshold: float | str = 0.6  # a number, 'tpr:0.95' (keep 95% of seen val images), 'best', or SUPER/SUB
    # rules per level ('tpr:0.985/tpr:0.97')
    reference_backbone: str = "efficientnet_lite0"  # frozen ImageNet backbone of the `pretrained_*` scores
    reference_size: int = 224  # side at which the reference backbone sees the images
    # --- runtime ---
    seed: int = 0  # seeds torch, numpy and python
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with native bf16) | bf16 | fp32
    eval_batch_size: int = 512  # images per step at evaluation
    tta: bool = False  # evaluate on each image and its mirror image, averaging the projection features

    def validate(self) -> None:
        for key, registry in (("backbone", BACKBONES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("novelty_score", SCORES), ("reference_backbone", BACKBONES)):
            registry.get(getattr(self, key), where=key)
        for key, allowed in (("depth", DEPTHS), ("precision", PRECISIONS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        if not BACKBONES.meta(self.reference_backbone).get("imagenet"):
            raise ConfigError(f"reference_backbone: {self.reference_backbone!r} has no ImageNet weights; the "
                              "reference must be a pretrained backbone (efficientnet_lite0/1/2, resnet18, ...)")
        for key in ("epochs", "batch_size", "eval_batch_size", "proj_dim", "folds", "reference_size"):
            if getattr(self, key) < (2 if key == "batch_size" else 1):
                raise ConfigError(f"{key}: must be positive, got {getattr(self, key)}")
        if not self.lr > 0 or not 0 <= self.val_fraction < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("lr must be > 0, val_fraction and dropout in [0, 1)")
        if self.holdout_subclasses < 0 or self.holdout_superclasses < 0 or self.mixup_alpha < 0:
            raise ConfigError("holdout_subclasses, holdout_superclasses and mixup_alpha must be >= 0")
        if not 0 <= self.translate < 0.5:
            raise ConfigError(f"translate: must be in [0, 0.5), got {self.translate}")
        Threshold.per_level(self.threshold)

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_dict(TrainConfig, {**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Does `value` fit `hint`? Returns (ok, value) with ints widened to float where a float is wanted."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return True, value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if t is float and str not in options and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return True, float(value)  # YAML 1.1 reads `3e-4` as text
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if t in (str, bool) and isinstance(value, t):
            return True, value
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            return True, value
        if (typing.get_origin(t) or t) in (dict, list) and isinstance(value, typing.get_origin(t) or t):
            return True, value
        if t is Any:
            return True, value
    return False, value


def from_dict(cls, data: dict[str, Any] | None, where: str = ""):
    """Build dataclass `cls` from a dict, refusing unknown keys and wrong types (naming the key path)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        ok, value = _type_ok(value, hint)
        if not ok:
            raise ConfigError(f"{where}{key}: expected {_hint_name(hint)}, got {value!r}")
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}{key}.")
        kwargs[key] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check:
        check()
    return obj


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_value(text: str) -> Any:
    """A `--set` value as YAML: `0.1` and `3e-4` -> float, `true` -> bool, `resnet18` -> str."""
    if _FLOAT.fullmatch(text.strip()):
        return int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `key=value` (dotted keys reach into nested mappings) to a plain dict, returning a new dict."""
    out = _deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        node = out
        *parents, last = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a mapping")
        node[last] = parse_value(text)
    return out


def _deepcopy(d):
    return {k: _deepcopy(v) for k, v in d.items()} if isinstance(d, dict) else d


def read_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_train_config(path: Path | str | None, overrides: list[str] | None = None) -> TrainConfig:
    data = read_yaml(path) if path else {}
    return from_dict(TrainConfig, apply_overrides(data, overrides))


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=False)
