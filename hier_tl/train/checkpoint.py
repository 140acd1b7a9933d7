"""Checkpoints: everything needed to resume a run or predict with it, written atomically and loaded with
`weights_only=True`. A damaged, truncated or foreign file is one `CheckpointError` naming it."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

from ..core.config import from_dict
from ..core.errors import CheckpointError, ConfigError
from ..core.fileio import atomic_path
from ..data.taxonomy import LabelSpace
from .models import HierNet, build_model
from .train_config import TrainConfig

FORMAT = "hier-tl-checkpoint/1"
REQUIRED = ("model", "epoch", "config", "space", "history", "norm")


def to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buf)
    return buf.getvalue()


def save(state: dict, path: Path | str) -> Path:
    """Write `state` to `path` (or `path/checkpoint.pt` for a folder) through a temporary file and a rename."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / "checkpoint.pt"
    with atomic_path(path) as tmp:
        tmp.write_bytes(to_bytes(state))
    return path


def load(source: Path | str | bytes, name: str = "") -> dict:
    """A checkpoint from a file (or a folder holding checkpoint.pt) or from bytes read elsewhere."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        path = path / "checkpoint.pt" if path.is_dir() else path
        name = name or str(path)
        try:
            source = path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{name}: cannot be read ({e.strerror or e})") from None
    if not zipfile.is_zipfile(io.BytesIO(source)):
        raise CheckpointError(f"{name}: not a complete checkpoint (damaged, truncated or not a torch file)")
    try:
        ckpt = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = str(e).split("Unsupported global:")[-1].strip().splitlines()[0][:120] if "global" in str(e) else ""
        raise CheckpointError(f"{name}: refused, it holds objects a checkpoint never has, which could run code "
                              f"when loaded{f' ({what})' if what else ''}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{name}: not a complete checkpoint (damaged, truncated or not a torch file: "
                              f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{name}: not a hier-tl checkpoint (no {', '.join(missing)})")
    return ckpt


def model_from(ckpt: dict, device: str | torch.device = "cpu", name: str = "checkpoint") -> tuple[
        HierNet, TrainConfig, LabelSpace, tuple]:
    """Rebuild the trained model without fetching any pretrained weights (they are in the checkpoint)."""
    try:
        cfg = from_dict(TrainConfig, ckpt["config"])
        space = LabelSpace.from_dict(ckpt["space"])
        model, _ = build_model(cfg.replace(weights="none"), len(space.supers), len(space.subs))
        model.load_state_dict(ckpt["model"])
    except (ConfigError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{name}: does not describe a model this version can build "
                              f"({str(e).splitlines()[0][:200]})") from None
    norm = (tuple(ckpt["norm"][0]), tuple(ckpt["norm"][1]))
    return model.to(device), cfg, space, norm
