"""Reference features: what a frozen ImageNet backbone, never fine-tuned, sees in each image.

Fine-tuning on the seen classes reshapes a backbone around them, and it forgets what told other animals
apart; the pretrained backbone has not. The `pretrained_*` novelty scores measure distances in these
features (the README's "How far validation can be trusted" measures what it buys). They depend only on the
images, the reference backbone and the input side, so they are computed once per dataset and cached on
disk (beside the decoded images): every trial and fold of a sweep on one machine shares them, and through a
`Share` (a sweep's results storage) every machine of a cluster: the first to need them computes and
publishes them, the others download them.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..core.errors import HierTLError
from ..core.fileio import atomic_path, cache_dir
from ..core.fileio import locked
from ..data.store import Share
from . import augment
from .models import build_backbone

CACHE_VERSION = 1


def features(images: torch.Tensor, backbone: str, size: int, bf16: bool = False, batch: int = 256,
             progress=None, device: torch.device | None = None, share: Share | None = None) -> torch.Tensor:
    """float32 CPU features (N x d) of uint8 images (N x 3 x H x W, copied a batch at a time to `device`,
    default: theirs) from the ImageNet weights of `backbone` at `size` px: from the on-disk cache when these
    images were seen, else from `share` where another machine computed them, else computed, cached and
    published to `share` (a cache that cannot be written costs a warning and computing again next time)."""
    device = torch.device(device or images.device)
    name = f"{_key(images, backbone, size, bf16, device)}.npy"
    path = cache_dir() / "reference" / name
    with locked(path.with_suffix(".lock")):  # trials starting together on one machine: the first computes
        feats = _load(path)
        if feats is None and share is not None and share.fetch(f"reference/{name}", path, _in_mb(progress)):
            feats = _load(path)
        if feats is not None:
            return feats
        # the backbone's initialisation (before its weights load) draws from a forked generator: a trial trains
        # alike whether it computed these features or read them
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            feats = _compute(images, backbone, size, bf16, batch, progress, device)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, feats.numpy())
            if share is not None:
                share.publish(f"reference/{name}", path)
        except (OSError, HierTLError) as e:
            print(f"warning: could not cache or share reference features at {path} ({e})", file=sys.stderr)
        return feats


def _load(path: Path) -> torch.Tensor | None:
    """Cached features, or None: not there, or unreadable (then they are fetched or computed again)."""
    try:
        return torch.from_numpy(np.load(path))
    except (OSError, ValueError):
        return None


def _in_mb(progress):
    """A download's (bytes done, total) as the phase "downloading reference features" in MB."""
    if progress is None:
        return None
    return lambda done, total: progress("downloading reference features", done >> 20, total >> 20)


def _key(images: torch.Tensor, backbone: str, size: int, bf16: bool, device: torch.device) -> str:
    h = hashlib.blake2b(f"v{CACHE_VERSION}|{backbone}|{size}|{bf16}|{device.type}|{tuple(images.shape)}"
                        .encode(), digest_size=16)
    h.update(np.ascontiguousarray(images.cpu().numpy()))  # hashed in place: no copy of the image bytes
    return h.hexdigest()


@torch.no_grad()
def _compute(images: torch.Tensor, backbone: str, size: int, bf16: bool, batch: int, progress=None,
             device: torch.device | None = None) -> torch.Tensor:
    t0 = time.time()
    print(f"reference features: {backbone} (ImageNet, frozen) at {size} px for {len(images)} images...",
          file=sys.stderr, flush=True)
    bb = build_backbone(backbone, "imagenet")
    device = device or images.device
    model = bb.module.eval().to(device=device, memory_format=torch.channels_last)
    parts = []
    for start in range(0, len(images), batch):
        x = augment.to_input(images[start:start + batch].to(device), size, bb.norm)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            parts.append(model(x).float())
        if progress is not None:
            progress("reference features", min(start + batch, len(images)), len(images))
    print(f"reference features: done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return torch.cat(parts).cpu() if parts else torch.empty(0, bb.dim)
