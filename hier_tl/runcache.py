"""Training runs shared by trials that differ only in novelty keys (threshold, novelty_score).

When the sweep samples the threshold, two trials with the same everything-else would train the same
network twice. Instead the first one stores each epoch's training metrics, validation logits and latest
checkpoint here; a later trial replays those epochs (re-scoring the logits with its own threshold) and
only trains the epochs that are not cached yet, from the cached checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .config import TrainConfig
from .metrics import Outputs
from .sweep import NOVELTY_KEYS

TRAINING_KEYS = ("epoch", "train_loss", "val_loss", "train_time", "images_per_s", "current_lr")


class RunCache:
    def __init__(self, root: Path | str, cfg: TrainConfig):
        d = {k: v for k, v in cfg.to_dict().items() if k not in NOVELTY_KEYS}
        key = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.dir = Path(root) / key
        self.owner = False

    def epochs(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in self.dir.glob("epoch_*.pt"))

    def load(self, epoch: int) -> tuple[dict, Outputs]:
        d = torch.load(self.dir / f"epoch_{epoch}.pt", weights_only=True)
        return d["metrics"], Outputs.from_dict(d["outputs"])

    def checkpoint(self) -> Path | None:
        p = self.dir / "checkpoint.pt"
        return p if p.is_file() else None

    def acquire(self) -> bool:
        """Become the one trial that writes this run (others replay or train on their own)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.dir / "owner", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self.owner = True
        return True

    def release(self) -> None:
        if self.owner:
            (self.dir / "owner").unlink(missing_ok=True)
            self.owner = False

    def store(self, metrics: dict, outputs: Outputs, save) -> None:
        """Checkpoint first, then the epoch file: an epoch file implies a checkpoint at least that recent."""
        save(self.dir / "checkpoint.pt")
        tmp = self.dir / f".epoch.{os.getpid()}.tmp"
        torch.save({"metrics": {k: metrics[k] for k in TRAINING_KEYS}, "outputs": outputs.to_dict()}, tmp)
        os.replace(tmp, self.dir / f"epoch_{metrics['epoch']}.pt")
