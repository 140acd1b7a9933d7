"""Optimisers and learning-rate schedules, registered by name (`optimizer:` and `schedule:` in a config)."""

from __future__ import annotations

import math

import torch

from .registries import OPTIMIZERS, SCHEDULES
from .train_config import TrainConfig


@OPTIMIZERS.register("adamw")
def adamw(params, c: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, betas=(c.momentum, 0.999),
                             fused=_on_cuda(params))


@OPTIMIZERS.register("sgd")
def sgd(params, c: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum, nesterov=True,
                           fused=_on_cuda(params))


def _on_cuda(params: list) -> bool | None:
    """Fused optimiser kernels on CUDA (one launch per step instead of a few per tensor group); default off it."""
    return True if params and all(p.is_cuda for p in params) else None


@SCHEDULES.register("cosine")
def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


@SCHEDULES.register("constant")
def constant(t: float) -> float:
    return 1.0


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.optimizer, "optimizer")([p for p in model.parameters() if p.requires_grad], cfg)


def make_schedule(cfg: TrainConfig, opt, steps_per_epoch: int):
    """Linear warmup for `warmup_epochs`, then the registered schedule over the remaining steps."""
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warm + 1, cfg.epochs * steps_per_epoch)
    after = SCHEDULES.get(cfg.schedule, "schedule")
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else after(min(1.0, (s - warm) / (total - warm))))
