"""Batched augmentation on the device (no per-image Python work).

The seed paper's recipe: horizontal flip, rotation within +-10 degrees, colour jitter 0.2 for
brightness / contrast / saturation; optionally a random shift (`translate`, not in the paper); then an
optional resize and the normalisation the backbone's weights expect. Mixup mixes images and both heads'
targets with one Beta(alpha, alpha) weight per batch.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

GRAY = (0.299, 0.587, 0.114)


def to_input(x: torch.Tensor, size: int, norm: tuple) -> torch.Tensor:
    """uint8 or [0,1] float images -> resized, normalised float input for the backbone."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if size and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    mean, std = _channels(tuple(norm[0]), x.device, x.dtype), _channels(tuple(norm[1]), x.device, x.dtype)
    return (x - mean) / std


@functools.lru_cache(maxsize=64)
def _channels(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A (1, 3, 1, 1) constant on the device, made once: building it from a Python list at every batch is a
    blocking host-to-device copy (a host sync per step on a GPU)."""
    return torch.tensor(values, dtype=dtype).view(1, 3, 1, 1).to(device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * _channels(GRAY, x.device, x.dtype)).sum(1, keepdim=True)


def _factor(n: int, strength: float, device) -> torch.Tensor:
    return (1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * strength)


def augment(x: torch.Tensor, hflip: bool = True, rotate_deg: float = 10.0, jitter: float = 0.2,
            translate: float = 0.0) -> torch.Tensor:
    """uint8 batch (B, 3, H, W) -> augmented float batch in [0, 1]. Rotation and translation (a random
    shift of up to `translate` x the image side on each axis) are one affine resampling."""
    x = x.float().div_(255)
    n, dev = x.shape[0], x.device
    if hflip:
        flip = torch.rand(n, 1, 1, 1, device=dev) < 0.5
        x = torch.where(flip, x.flip(3), x)
    if rotate_deg > 0 or translate > 0:
        a = (torch.rand(n, device=dev) * 2 - 1) * math.radians(rotate_deg)
        cos, sin = a.cos(), a.sin()
        tx, ty = torch.zeros(2, n, device=dev)  # no draw when off: the default recipe's random stream
        if translate > 0:
            tx, ty = (torch.rand(2, n, device=dev) * 2 - 1) * 2 * translate  # grid coordinates span 2
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if jitter > 0:
        x = (x * _factor(n, jitter, dev)).clamp_(0, 1)  # brightness
        m = _gray(x).mean((2, 3), keepdim=True)
        x = ((x - m) * _factor(n, jitter, dev) + m).clamp_(0, 1)  # contrast
        g = _gray(x)
        x = ((x - g) * _factor(n, jitter, dev) + g).clamp_(0, 1)  # saturation
    return x


def mixup(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix the batch with a permutation of itself; returns (mixed, permutation, lambda)."""
    if alpha <= 0:
        return x, torch.arange(x.shape[0], device=x.device), 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the mixed target lam * onehot(y) + (1 - lam) * onehot(y[perm])."""
    ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if lam == 1.0:
        return ce
    return lam * ce + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=label_smoothing)
