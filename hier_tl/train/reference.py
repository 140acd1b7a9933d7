"""Reference features: what a frozen ImageNet backbone, never fine-tuned, sees in each image.

Fine-tuning on the seen classes reshapes a backbone around them, and it forgets what told other animals
apart; the pretrained backbone has not. The `pretrained_*` novelty scores measure distances in these
features (the README's "How far validation can be trusted" measures what it buys). They depend only on the
images, the reference backbone and the input side, so they are computed once per dataset and cached on
disk (beside the decoded images): every trial and fold of a sweep on one machine shares them.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..core.errors import HierTLError
from ..core.fileio import atomic_path, cache_dir
from . import augment
from .models import build_backbone

CACHE_VERSION = 1


def features(images: torch.Tensor, backbone: str, size: int, bf16: bool = False, batch: int = 256,
             progress=None) -> torch.Tensor:
    """float32 CPU features (N x d) of uint8 images (N x 3 x H x W, on the device that computes them) from
    the ImageNet weights of `backbone` at `size` px; from the on-disk cache when these images were seen (a
    cache that cannot be written costs a warning and computing again next time)."""
    path = cache_dir() / "reference" / f"{_key(images, backbone, size, bf16)}.npy"
    with _locked(path):  # trials starting together on one machine: the first computes, the others read
        if path.is_file():
            try:
                return torch.from_numpy(np.load(path))
            except (OSError, ValueError):
                pass  # unreadable cache entry: compute again
        feats = _compute(images, backbone, size, bf16, batch, progress)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, feats.numpy())
        except (OSError, HierTLError) as e:
            print(f"warning: could not cache reference features at {path} ({e})", file=sys.stderr)
        return feats


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path`'s lock file (held by this process until the block ends); where no lock
    can be taken (read-only cache, no fcntl), the block runs unlocked: the writes are atomic anyway."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path.with_suffix(".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): unlocked, still atomic
            pass
        yield


def _key(images: torch.Tensor, backbone: str, size: int, bf16: bool) -> str:
    h = hashlib.blake2b(f"v{CACHE_VERSION}|{backbone}|{size}|{bf16}|{images.device.type}|{tuple(images.shape)}"
                        .encode(), digest_size=16)
    h.update(np.ascontiguousarray(images.cpu().numpy()))  # hashed in place: no copy of the image bytes
    return h.hexdigest()


@torch.no_grad()
def _compute(images: torch.Tensor, backbone: str, size: int, bf16: bool, batch: int, progress=None) -> torch.Tensor:
    t0 = time.time()
    print(f"reference features: {backbone} (ImageNet, frozen) at {size} px for {len(images)} images...",
          file=sys.stderr, flush=True)
    bb = build_backbone(backbone, "imagenet")
    model = bb.module.eval().to(device=images.device, memory_format=torch.channels_last)
    parts = []
    for start in range(0, len(images), batch):
        x = augment.to_input(images[start:start + batch], size, bb.norm).contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            parts.append(model(x).float())
        if progress is not None:
            progress("reference features", min(start + batch, len(images)), len(images))
    print(f"reference features: done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return torch.cat(parts).cpu() if parts else torch.empty(0, bb.dim)
