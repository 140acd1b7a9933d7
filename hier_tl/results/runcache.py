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

from ..core.fileio import atomic_path
from ..train import checkpoint
from ..train.outputs import Outputs
from ..train.registries import EPOCH_METRICS
from ..train.train_config import NOVELTY_KEYS, TrainConfig


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

    def store(self, report) -> None:
        """Checkpoint first, then the epoch file: an epoch file implies a checkpoint at least that recent.
        Every registered training metric is kept (the novelty metrics are re-scored on replay)."""
        m = report.metrics
        report.save(self.dir / "checkpoint.pt")
        with atomic_path(self.dir / f"epoch_{m['epoch']}.pt") as tmp:
            torch.save({"metrics": {k: m[k] for k in ("epoch", *EPOCH_METRICS.names())},
                        "outputs": report.outputs.to_dict()}, tmp)

    def replay(self, cfg: TrainConfig, evaluate, send) -> dict | None:
        """Send every cached epoch re-scored by `evaluate(outputs)` as this trial's own; returns the checkpoint
        to go on from (None when nothing usable is cached: a gap, or a checkpoint of another epoch)."""
        epochs = [e for e in self.epochs() if e <= cfg.epochs]
        path = self.checkpoint()
        if not epochs or epochs != list(range(1, len(epochs) + 1)) or path is None:
            return None
        ckpt = checkpoint.load(path)
        if int(ckpt["epoch"]) != epochs[-1]:  # written mid-epoch by a killed trial: train afresh
            return None
        history = []
        for e in epochs:
            train_m, out = self.load(e)
            history.append({**train_m, **evaluate(out), "epoch_time": 0.0, "replayed": True})
            own = {**ckpt, "config": cfg.to_dict(), "history": list(history)} if e == epochs[-1] else None
            send(history[-1], out, own)
        return {**ckpt, "config": cfg.to_dict(), "history": history}
