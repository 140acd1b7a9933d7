"""Checkpoints: everything needed to resume a run or predict with it, written atomically and loaded with
`weights_only=True`. A damaged, truncated or foreign file is one `CheckpointError` naming it. And the
novelty thresholds a checkpoint predicts with under any rule of the threshold grammar (`thresholds`)."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..core.config import Threshold, from_dict
from ..core.errors import CheckpointError, ConfigError
from ..core.fileio import atomic_path
from ..core.numbers import finite
from ..data.taxonomy import LabelSpace
from .metrics import LEVELS, thresholds_for
from .models import HierNet, build_model
from .outputs import Outputs
from .train_config import TrainConfig

FORMAT = "hier-tl-checkpoint/1"
REQUIRED = {"model": dict, "epoch": int, "config": dict, "space": dict, "history": list, "norm": (list, tuple)}
OUTPUTS = "val_outputs.pt"  # a run folder's validation outputs, beside its checkpoint.pt


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
    ckpt = _unpickle(path if isinstance(source, (str, Path)) else source, name, "checkpoint")
    wrong = [k for k, t in REQUIRED.items() if not isinstance(ckpt, dict) or not isinstance(ckpt.get(k), t)]
    if wrong or not all(isinstance(h, dict) for h in ckpt["history"]):
        raise CheckpointError(f"{name}: not a hier-tl checkpoint (no {', '.join(wrong) or 'history of epochs'} as "
                              "hier-tl writes it)")
    return ckpt


def _unpickle(source: Path | bytes, name: str, what: str) -> Any:
    """A torch file's contents, loaded with weights_only=True; CheckpointError naming `name` if it cannot be."""
    if isinstance(source, Path):
        try:
            source = source.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{name}: cannot be read ({e.strerror or e})") from None
    if not zipfile.is_zipfile(io.BytesIO(source)):
        raise CheckpointError(f"{name}: not a complete {what} (damaged, truncated or not a torch file)")
    try:
        return torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = str(e).split("Unsupported global:")[-1].strip().splitlines()[0][:120] if "global" in str(e) else ""
        raise CheckpointError(f"{name}: refused, it holds objects a {what} never has, which could run code "
                              f"when loaded{f' ({culprit})' if culprit else ''}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{name}: not a complete {what} (damaged, truncated or not a torch file: "
                              f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None


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


def thresholds(ckpt: dict, cfg: TrainConfig, spec: Any = None, outputs: Path | None = None,
               name: str = "checkpoint", grid: dict | None = None) -> tuple[float, float]:
    """(superclass, subclass) thresholds to predict with under `spec`, the sweep file's grammar (a number,
    SUPER/SUB, `tpr:P`, `best`); None: the values the run resolved at its last epoch. A number is itself; a
    `tpr:` or `best` rule needs validation scores: the recorded value where it is the run's own rule, else
    the sweep's threshold grid `grid` ({level: {rule: value}}, what the sweep resolved for this trial and
    epoch: `reading.threshold_grid`), else the validation outputs file `outputs` (a run folder's
    val_outputs.pt), read only then; without them it is refused, saying why."""
    last = ckpt["history"][-1] if ckpt["history"] else {}
    recorded = {lvl: finite(last.get(f"threshold_{lvl}")) for lvl in LEVELS}
    if spec is None:
        if None in recorded.values():
            raise CheckpointError(f"{name}: records no resolved thresholds; pass --threshold VALUE")
        return recorded["super"], recorded["sub"]
    rules, own = Threshold.per_level(spec, "--threshold"), Threshold.per_level(cfg.threshold)
    out = {lvl: r.value if r.kind == "value" else recorded[lvl] if str(r) == str(own[lvl]) else None
           for lvl, r in rules.items()}
    out = {lvl: finite((grid or {}).get(lvl, {}).get(str(rules[lvl]))) if v is None else v for lvl, v in out.items()}
    todo = [lvl for lvl, v in out.items() if v is None]
    if todo and (outputs is None or not Path(outputs).is_file()):
        lvl = todo[0]
        known = sorted((grid or {}).get(lvl, {}))
        raise CheckpointError(
            f"--threshold {spec}: the {'superclass' if lvl == 'super' else 'subclass'} rule {rules[lvl]} needs "
            f"validation scores to resolve, and {name} carries none (a run folder of `hier-tl train` keeps them in "
            f"{OUTPUTS}; a sweep trial's checkpoint does not)"
            + (f" and the sweep's threshold grid did not resolve it (it did: {', '.join(known)})" if known else "")
            + f": pass a number, or SUPER/SUB numbers (its own rule {cfg.threshold} resolved to {_pair(recorded)})")
    if todo:
        val = _outputs(Path(outputs), ckpt, cfg, recorded)
        out.update({lvl: v for lvl, v in thresholds_for(val, cfg.novelty_score, spec).items() if lvl in todo})
    return out["super"], out["sub"]


def _outputs(path: Path, ckpt: dict, cfg: TrainConfig, recorded: dict) -> Outputs:
    """The validation outputs at `path`, checked to be those of this checkpoint (its label space, and its own
    threshold rule resolving there to the values it recorded: not outputs of another epoch)."""
    d = _unpickle(path, str(path), "validation outputs file")
    if not isinstance(d, dict) or not all(isinstance(d.get(k), torch.Tensor) for k in
                                          ("super_logits", "sub_logits", "super_target", "sub_target")):
        raise CheckpointError(f"{path}: not validation outputs hier-tl wrote (no logits and targets)")
    out = Outputs.from_dict(d)
    stale = False  # with folds, the recorded values are means over folds, these outputs fold 0's: no check
    if cfg.folds == 1 and None not in recorded.values():
        mine = thresholds_for(out, cfg.novelty_score, cfg.threshold)
        stale = not all(math.isclose(mine[lvl], recorded[lvl], rel_tol=1e-5, abs_tol=1e-6) for lvl in LEVELS)
    if d.get("space") != ckpt["space"] or stale:
        raise CheckpointError(f"{path}: not the validation outputs of the checkpoint beside it (another label "
                              f"space or epoch: a run stopped between writing the two?): pass a number to "
                              f"--threshold, or train again")
    return out


def _pair(recorded: dict) -> str:
    return "/".join("?" if v is None else f"{v:.6g}" for v in recorded.values())
