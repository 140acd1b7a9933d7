"""The one shared trainer: `fit(config, data, report=callback)`. No Ray in here.

The dataset lives on the device as uint8; augmentation is batched on the device; channels_last
everywhere, bf16 autocast on CUDA and on CPUs with native bf16 (`precision: auto`); no host sync inside the step loop (the loss is summed on the device and read once
per epoch, which is also where a NaN or infinite loss stops the run).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import augment, metrics
from .config import ConfigError, TrainConfig, from_dict
from .data import Dataset
from .metrics import Outputs
from .novelty import FEATURE_SCORES
from .models import HierNet, build_model
from .split import NOVEL, LabelSpace, make_split

ALL_SCORES = ("msp", "maxlogit", "energy")  # logit scores: free to compute at every epoch
BANK_SIZE = 10000  # training images whose features feature scores (knn) compare against
Report = Callable[[dict, Callable[[Path], Path], Outputs], None]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    model: HierNet
    space: LabelSpace
    outputs: Outputs  # validation logits + targets of the last epoch
    history: list[dict] = field(default_factory=list)
    norm: tuple = ()


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """bf16 autocast: always on CUDA under 'auto', and on CPUs with native bf16 (AVX512-BF16 / AMX)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


OPTIMIZERS = {
    "adamw": lambda ps, c: torch.optim.AdamW(ps, lr=c.lr, weight_decay=c.weight_decay, betas=(c.momentum, 0.999)),
    "sgd": lambda ps, c: torch.optim.SGD(ps, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum, nesterov=True),
}


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    return OPTIMIZERS[cfg.optimizer]([p for p in model.parameters() if p.requires_grad], cfg)


SCHEDULES = {"cosine": lambda t: 0.5 * (1 + math.cos(math.pi * t)), "constant": lambda t: 1.0}


def make_schedule(cfg: TrainConfig, opt, steps_per_epoch: int):
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warm + 1, cfg.epochs * steps_per_epoch)
    after = SCHEDULES[cfg.schedule]
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else after(min(1.0, (s - warm) / (total - warm))))


def train_one_epoch(model, opt, sched, X, y_sup, y_sub, idx, cfg: TrainConfig, norm, size, device,
                    bf16: bool = False) -> torch.Tensor:
    """One pass over `idx` (device tensor of row indices); returns the summed loss as a device tensor."""
    model.train()
    order = idx[torch.randperm(len(idx), device=device)]
    total = torch.zeros((), device=device)
    for start in range(0, len(order), cfg.batch_size):
        b = order[start:start + cfg.batch_size]
        if len(b) < 2:  # BatchNorm cannot train on one image
            continue
        x = augment.augment(X[b], cfg.hflip, cfg.rotate_deg, cfg.jitter, cfg.translate)
        x, perm, lam = augment.mixup(x, cfg.mixup_alpha)
        x = augment.to_input(x, size, norm)
        x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            ls, lb = model(x)
        loss = augment.mixed_ce(ls.float(), y_sup[b], perm, lam, cfg.label_smoothing) + \
            augment.mixed_ce(lb.float(), y_sub[b], perm, lam, cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach() * len(b)
    return total


@torch.inference_mode()
def infer(model: HierNet, X: torch.Tensor, norm, size: int, batch: int = 512,
          precision: str = "auto", tta: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(superclass logits, subclass logits, projection features) for uint8 images X, in eval mode, as
    float32 on the CPU. `tta` averages the features of each image and its mirror image (the heads are
    linear, so the logits are averaged too)."""
    model.eval()
    device = next(model.parameters()).device
    bf16 = use_bf16(device, precision)
    sup = [torch.empty(0, model.super_head.out_features)]
    sub = [torch.empty(0, model.sub_head.out_features)]
    feats = [torch.empty(0, model.super_head.in_features)]
    for start in range(0, len(X), batch):
        x = augment.to_input(X[start:start + batch].to(device), size, norm)
        x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            f = model.features(x)
            if tta:
                f = (f + model.features(x.flip(3))) / 2
            a, b = model.super_head(f), model.sub_head(f)
        sup.append(a.float().cpu())
        sub.append(b.float().cpu())
        feats.append(f.float().cpu())
    return torch.cat(sup), torch.cat(sub), torch.cat(feats)


def validation_loss(out: Outputs) -> float:
    """Cross-entropy of both heads on seen validation images (novel ones have no target)."""
    loss = 0.0
    for lvl in metrics.LEVELS:
        t = out.target(lvl)
        keep = t != NOVEL
        if keep.any():
            loss += float(F.cross_entropy(out.logits(lvl)[keep], t[keep]))
    return loss


def save_checkpoint(path: Path, model, opt, sched, epoch: int, cfg: TrainConfig, space: LabelSpace,
                    history: list[dict], norm, data_side: int, bank: torch.Tensor | None = None) -> Path:
    """Atomic write of everything needed to resume or predict (loadable with weights_only=True)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "config": cfg.to_dict(), "space": space.to_dict(), "history": history,
             "norm": [list(norm[0]), list(norm[1])], "data_side": data_side, "bank": bank,
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return atomic_save(state, path)


def atomic_save(obj, path: Path) -> Path:
    """torch.save through a temporary file and a rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(ckpt: dict, device: str = "cpu") -> tuple[HierNet, TrainConfig, LabelSpace, tuple]:
    """Rebuild the trained model without fetching any pretrained weights (they are in the checkpoint)."""
    cfg = from_dict(TrainConfig, ckpt["config"])
    space = LabelSpace.from_dict(ckpt["space"])
    model, _ = build_model(cfg.replace(weights="none"), len(space.supers), len(space.subs))
    model.load_state_dict(ckpt["model"])
    norm = (tuple(ckpt["norm"][0]), tuple(ckpt["norm"][1]))
    return model.to(resolve_device(device)), cfg, space, norm


def _restore(ckpt: dict, model, opt, sched) -> tuple[int, list[dict]]:
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"])
    if ckpt.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    return int(ckpt["epoch"]), list(ckpt["history"])


def fit(cfg: TrainConfig, data: Dataset, report: Optional[Report] = None,
        resume: Path | str | dict | None = None, scores: tuple[str, ...] = ALL_SCORES) -> FitResult:
    """Train `cfg` on `data`; after every epoch call `report(metrics, save_checkpoint, outputs)`.

    `save_checkpoint(dir_or_file)` writes a resumable checkpoint and returns its path; `outputs` holds the
    epoch's validation logits and targets for post-hoc re-scoring. `resume` is a checkpoint (path or
    loaded dict) to continue from. Raises DivergedError on a NaN or infinite loss.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    split = make_split(data, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses, cfg.holdout_superclasses)
    space = split.space
    model, bb = build_model(cfg, len(space.supers), len(space.subs))
    model.to(device=device, memory_format=torch.channels_last)
    bf16 = use_bf16(device, cfg.precision)
    size = cfg.image_size or data.images.shape[-1]
    X = data.images.to(device)
    y_sup, y_sub = (t.to(device) for t in space.encode(data.superclass, data.subclass))
    tr, va = split.train.to(device), split.val
    steps = max(1, math.ceil(len(tr) / cfg.batch_size))
    opt = make_optimizer(cfg, model)
    sched = make_schedule(cfg, opt, steps)
    start, history = 0, []
    if resume is not None:
        start, history = _restore(resume if isinstance(resume, dict) else load_checkpoint(resume), model, opt, sched)
    va_dev = va.to(device)

    want_bank = bool({cfg.novelty_score, *scores} & FEATURE_SCORES)

    def validate() -> Outputs:
        sup_l, sub_l, feats = infer(model, X[va_dev], bb.norm, size, cfg.eval_batch_size, cfg.precision, cfg.tta)
        bank = None
        if want_bank:  # training features, unaugmented, for feature-space novelty scores
            bank = infer(model, X[tr[:BANK_SIZE]], bb.norm, size, cfg.eval_batch_size, cfg.precision,
                         cfg.tta)[2]
        return Outputs(sup_l, sub_l, y_sup[va_dev].cpu(), y_sub[va_dev].cpu(), space,
                       feats if want_bank else None, bank)

    out = None
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        loss_sum = train_one_epoch(model, opt, sched, X, y_sup, y_sub, tr, cfg, bb.norm, size, device, bf16)
        train_loss = float(loss_sum) / len(tr)  # the one host sync per epoch
        if not math.isfinite(train_loss):
            raise DivergedError(f"training loss is {train_loss} at epoch {epoch + 1} "
                                f"(lr={cfg.lr}, backbone={cfg.backbone}); lower the learning rate")
        train_time = time.perf_counter() - t0
        out = validate()
        m = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": validation_loss(out)}
        m.update(metrics.evaluate(out, space, cfg.novelty_score, cfg.threshold, scores))
        m.update(epoch_time=time.perf_counter() - t0, train_time=train_time,
                 images_per_s=len(tr) / train_time, current_lr=sched.get_last_lr()[0])
        history.append(m)
        if report is not None:
            def save(path, _e=epoch + 1, _h=list(history), _b=out.bank):
                return save_checkpoint(path, model, opt, sched, _e, cfg, space, _h, bb.norm, X.shape[-1], _b)
            report(m, save, out)
    if out is None:  # resumed after the last epoch: evaluate once so callers get outputs
        out = validate()
    return FitResult(model, space, out, history, bb.norm)
