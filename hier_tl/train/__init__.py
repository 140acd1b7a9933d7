"""train: one training run, with no Ray and no results folder: `TrainConfig`, the backbones, batched on-device
augmentation, the shared trainer `fit(config, data, report=callback)`, validation outputs, metrics, post-hoc
novelty scores and thresholds, frozen reference features and checkpoints. Imports: core, data."""

from __future__ import annotations


def __getattr__(name: str):  # `from hier_tl.train import fit, TrainConfig` without importing torch up front
    if name in ("fit", "EpochReport", "FitResult"):
        from . import trainer

        return getattr(trainer, name)
    if name == "TrainConfig":
        from .train_config import TrainConfig

        return TrainConfig
    raise AttributeError(name)
