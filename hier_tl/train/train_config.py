"""`TrainConfig`: everything one training run needs, as one flat dataclass.

Flat on purpose: every field is one sweepable key (`lr`, `backbone`, `mixup_alpha`...), one `--set key=value`
override and one column in the results tables.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ..core.config import (
    Check,
    Named,
    OneOf,
    Range,
    Threshold,
    apply_overrides,
    check_fields,
    from_dict,
    marked,
)
from ..core.errors import ConfigError
from ..core.version import code_version
from ..core.yamlio import read_yaml
from .registries import BACKBONES, OPTIMIZERS, SCHEDULES, SCORES

DEPTHS = ("linear", "partial", "full")
PRECISIONS = ("auto", "bf16", "fp32")
NOVELTY_KEYS = ("threshold", "novelty_score")  # evaluated post hoc from saved outputs: never a reason to retrain


def _device(v: str, key: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        raise ConfigError(f"{key}: {v!r} is not auto, cpu, cuda or cuda:N")


def _threshold(v, key: str) -> None:
    Threshold.per_level(v, key)


PROTOCOL = "protocol"  # marks the keys that define the validation set: trials compare only within one protocol
SMALL_INT = Range(1, 1_000_000)
FRACTION = Range(0, 1, hi_open=True)


@dataclass
class TrainConfig:
    """Every key, its kind and range beside it (checked by `from_dict`, so by `train`, sweep validation of
    `base`, every sampler bound and grid value, and `predict`'s overrides), and what it means."""

    # --- model ---
    backbone: Annotated[str, Named(BACKBONES)] = "cnn"  # registry name: cnn | resnet18 | efficientnet_b0 | ...
    weights: str = "none"  # none | imagenet | auto (imagenet where available) | PATH (weights_only load)
    depth: Annotated[str, OneOf(DEPTHS)] = "full"  # fine-tuning depth: linear | partial | full (models.py)
    image_size: Annotated[int, Range(0, 1024)] = 0  # side of the square input; 0 keeps the dataset's size
    proj_dim: Annotated[int, Range(1, 65536)] = 256  # width of the shared projection before the two heads
    dropout: Annotated[float, FRACTION] = 0.3  # dropout after the shared projection
    # --- optimisation ---
    epochs: Annotated[int, Range(1, 10_000)] = 10  # training epochs
    batch_size: Annotated[int, Range(2, 65536)] = 64  # images per step
    optimizer: Annotated[str, Named(OPTIMIZERS)] = "adamw"  # adamw | sgd
    lr: Annotated[float, Range(0, 10, lo_open=True)] = 1e-3  # peak learning rate
    weight_decay: Annotated[float, Range(0, 10)] = 0.05  # decoupled weight decay (AdamW) or L2 (SGD)
    momentum: Annotated[float, FRACTION] = 0.9  # SGD momentum / AdamW beta1
    schedule: Annotated[str, Named(SCHEDULES)] = "cosine"  # learning-rate schedule after warmup: cosine | constant
    warmup_epochs: Annotated[float, Range(0, 10_000)] = 1.0  # linear warmup length, in epochs
    label_smoothing: Annotated[float, FRACTION] = 0.0  # cross-entropy label smoothing
    # --- augmentation (batched, on the device) ---
    hflip: bool = True  # random horizontal flip
    rotate_deg: Annotated[float, Range(0, 180)] = 10.0  # random rotation in [-deg, +deg]
    jitter: Annotated[float, Range(0, 1)] = 0.2  # brightness/contrast/saturation jitter strength
    translate: Annotated[float, Range(0, 0.5, hi_open=True)] = 0.0  # random shift, fraction of the side per axis
    mixup_alpha: Annotated[float, Range(0, 100)] = 0.0  # mixup Beta(alpha, alpha); 0 disables
    # --- validation split (the validation protocol: trials are ranked only against the same protocol) ---
    val_fraction: Annotated[float, FRACTION, PROTOCOL] = 0.1  # stratified by subclass
    holdout_subclasses: Annotated[int, Range(0, 10_000), PROTOCOL] = 0  # per superclass: seen only in
    # validation, as novel subclasses
    holdout_superclasses: Annotated[int, Range(0, 10_000), PROTOCOL] = 0  # whole superclasses seen only in
    # validation, as novel at both levels
    split_seed: Annotated[int, Range(0, 2**32 - 1), PROTOCOL] = 0  # seed of the split (apart from `seed`, so
    # trials share one split)
    folds: Annotated[int, Range(1, 100), PROTOCOL] = 1  # rotating validation: one model per fold, trained in
    # lockstep; fold f moves the held-out superclass(es) f places on and redraws the held-out subclasses;
    # metrics are fold means (+ `<metric>_std`)
    # --- novelty ---
    novelty_score: Annotated[str, Named(SCORES)] = "msp"  # registry name: msp | energy | knn | ... | pretrained_hier
    threshold: Annotated[float | str, Check(_threshold)] = 0.6  # a number, 'tpr:0.95' (keep 95% of seen val
    # images), 'best', or SUPER/SUB rules per level ('tpr:0.985/tpr:0.97')
    reference_backbone: Annotated[str, Named(BACKBONES, (("imagenet", True, "has no ImageNet weights; the "
                                                          "reference must be a pretrained backbone "
                                                          "(efficientnet_lite0/1/2, resnet18, ...)"),))] = \
        "efficientnet_lite0"  # frozen ImageNet backbone of the `pretrained_*` scores
    reference_size: Annotated[int, Range(16, 1024)] = 224  # side at which the reference backbone sees the images
    # --- runtime ---
    seed: Annotated[int, Range(0, 2**63 - 1)] = 0  # seeds torch, numpy and python
    device: Annotated[str, Check(_device)] = "auto"  # auto | cpu | cuda | cuda:N
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"  # auto (bf16 autocast on CUDA and on CPUs with
    # native bf16) | bf16 | fp32
    eval_batch_size: Annotated[int, Range(1, 65536)] = 512  # images per step at evaluation
    tta: bool = False  # evaluate on each image and its mirror image, averaging the projection features

    def validate(self) -> None:
        """Each key against its rules, then what involves two keys at once."""
        check_fields(self)
        if self.weights == "imagenet" and not BACKBONES.meta(self.backbone).get("imagenet"):
            raise ConfigError(f"weights: backbone {self.backbone!r} has no ImageNet weights; use weights=none, "
                              "auto or a file path")

    def replace(self, **changes: Any) -> "TrainConfig":
        return from_dict(TrainConfig, {**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: Path | str | None, overrides: list[str] | None = None) -> TrainConfig:
    data = read_yaml(path) if path else {}
    return from_dict(TrainConfig, apply_overrides(data, overrides))


CONFIG_KEYS = tuple(TrainConfig.__dataclass_fields__)
PROTOCOL_KEYS = marked(TrainConfig, PROTOCOL)  # holdout_subclasses, holdout_superclasses, folds, ...


def protocol_label(cfg: TrainConfig | dict) -> str:
    """The validation protocol of a config (or of a results row), as people read it:
    `3 sub + 1 super held out, 3 folds`, `closed set`; val_fraction and split_seed when not the defaults."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    get = {k: d.get(k, TrainConfig.__dataclass_fields__[k].default) for k in PROTOCOL_KEYS}
    held = [f"{int(get[k])} {name}" for k, name in (("holdout_subclasses", "sub"), ("holdout_superclasses", "super"))
            if get[k] and get[k] == get[k]]
    parts = [" + ".join(held) + " held out" if held else "closed set"]
    if int(get["folds"] or 1) > 1:
        parts.append(f"{int(get['folds'])} folds")
    if float(get["val_fraction"]) != TrainConfig.val_fraction:
        parts.append(f"val {float(get['val_fraction']):g}")
    if int(get["split_seed"] or 0) != TrainConfig.split_seed:
        parts.append(f"split seed {int(get['split_seed'])}")
    return ", ".join(parts)


def config_columns(cfg: TrainConfig | dict) -> dict[str, Any]:
    """Config keys as result-table columns, with the validation protocol and the code version; `threshold`
    (number or text) is stored as text so the column has one type."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    d["threshold"] = str(d["threshold"])
    return {**d, "protocol": protocol_label(d), **code_version()}
