"""The train layer's registries of swappable parts; each fills on first lookup from the modules it names.

    @BACKBONES.register("resnet18", imagenet=True)  # hier_tl.train.models
    def resnet18(weights): ...
"""

from __future__ import annotations

from ..core.registry import Registry

BACKBONES = Registry("backbone", "hier_tl.train.models")  # meta: imagenet (bool), act_mult, gpu_bf16
# meta: features (needs features + a training bank), same_levels (one value per image at both levels),
# reference (needs the frozen ImageNet reference features, train/reference.py)
SCORES = Registry("novelty score", "hier_tl.train.novelty", "hier_tl.train.scores", "hier_tl.train.combine")
OPTIMIZERS = Registry("optimizer", "hier_tl.train.optim")
SCHEDULES = Registry("schedule", "hier_tl.train.optim")
EPOCH_METRICS = Registry("epoch metric", "hier_tl.train.metrics")  # meta: label (table column), fmt, mode
