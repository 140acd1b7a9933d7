"""The one shared trainer: `fit(config, data, report=callback)`. No Ray in here.

The dataset lives on the device as uint8 where it fits (a GPU with room to spare, or the CPU, where a
mapped store stays mapped and a batch gather copies that batch alone); on a GPU it does not fit, it stays on
the host and each batch is gathered there and copied without blocking, from pinned memory. Augmentation is
batched on the device; channels_last everywhere, bf16 autocast on CUDA and on CPUs with native bf16
(`precision: auto`); no host sync inside the step loop (the loss is summed on the device and read once per
epoch, which is also where a NaN or infinite loss stops the run).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..core.errors import ConfigError, DivergedError
from ..data.dataset import Dataset
from ..data.split import make_split
from ..data.taxonomy import LabelSpace
from . import augment, checkpoint, metrics, novelty, reference
from .folds import combine_folds
from .metrics import EpochState
from .models import HierNet, build_model
from .optim import make_optimizer, make_schedule
from .outputs import Outputs
from .registries import BACKBONES
from .train_config import TrainConfig

BANK_SIZE = 10000  # training images whose features feature scores (knn) compare against
GPU_SHARE = 0.5  # the uint8 dataset moves onto a GPU when it needs at most this share of its free memory


@dataclass
class EpochReport:
    """What `fit` hands its `report` callback after every epoch."""

    metrics: dict  # `epoch`, the registered training metrics and the validation metrics
    outputs: Outputs  # validation logits, targets (and features) for post-hoc re-scoring
    save: Callable[[Path | str], Path]  # save(dir_or_file) writes a resumable checkpoint, returns its path
    state: Callable[[], dict]  # the same checkpoint as a dict (to store elsewhere than a local file)
    fold_outputs: list = field(default_factory=list)  # with `folds` > 1: every fold's outputs (fold 0 first)


Report = Callable[[EpochReport], None]
Progress = Callable[[str, int, int], None]  # (phase, done, total): what a long run is doing now


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available here (use device=auto or cpu)")
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
    fold_outputs: list = field(default_factory=list)  # every fold's (fold 0 first)


def use_bf16(device: torch.device, precision: str = "auto", gpu_bf16: bool = True) -> bool:
    """bf16 autocast under 'auto': on CUDA unless the backbone says it is slower there (`gpu_bf16`), and on
    CPUs with native bf16 (AVX512-BF16 / AMX)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return gpu_bf16
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where batches are gathered from: a GPU when the uint8 dataset takes at most `GPU_SHARE` of its free
    memory (one copy there, whatever the folds), else the host; on a CPU, the images as they are (mapped
    from a store, they stay mapped)."""
    if device.type == "cuda" and images.device.type != "cuda" and \
            images.nbytes <= GPU_SHARE * torch.cuda.mem_get_info(device)[0]:
        return images.to(device)
    return images


def gather(t: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t[rows]` on `device` (`rows` where `t` is): indexed in place on the device, or gathered on the host
    into pinned memory and copied to the GPU without blocking (torch reuses a pinned block only once its
    copy is done)."""
    if t.device.type == device.type:
        return t[rows]
    out = torch.empty((len(rows), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    return torch.index_select(t, 0, rows, out=out).to(device, non_blocking=True)


def train_one_epoch(model, opt, sched, X, y_sup, y_sub, idx, cfg: TrainConfig, norm, size, device,
                    bf16: bool = False) -> torch.Tensor:
    """One pass over `idx` (row indices where X and the labels are: the device, or the host when X does not
    fit there); returns the summed loss as a device tensor."""
    model.train()
    order = idx[torch.randperm(len(idx)).to(idx.device)]  # the CPU's stream, wherever the data was placed
    total = torch.zeros((), device=device)
    for start in range(0, len(order), cfg.batch_size):
        b = order[start:start + cfg.batch_size]
        if len(b) < 2:  # BatchNorm cannot train on one image
            continue
        ys, yb = gather(y_sup, b, device), gather(y_sub, b, device)
        x = augment.augment(gather(X, b, device), cfg.hflip, cfg.rotate_deg, cfg.jitter, cfg.translate)
        x, perm, lam = augment.mixup(x, cfg.mixup_alpha)
        x = augment.to_input(x, size, norm)
        x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            ls, lb = model(x)
        loss = augment.mixed_ce(ls.float(), ys, perm, lam, cfg.label_smoothing) + \
            augment.mixed_ce(lb.float(), yb, perm, lam, cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach() * len(b)
    return total


@torch.inference_mode()
def infer(model: HierNet, X: torch.Tensor, norm, size: int, batch: int = 512, precision: str = "auto",
          tta: bool = False, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
    """(superclass logits, subclass logits, projection features, backbone features) for uint8 images X (the
    `rows` of X, gathered a batch at a time, when given), in eval mode, as float32 on the CPU. `tta` averages
    the features of each image and its mirror image (the heads are linear, so the logits are averaged too)."""
    model.eval()
    device = next(model.parameters()).device
    bf16 = use_bf16(device, precision, getattr(model, "gpu_bf16", True))
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    for start in range(0, len(X) if rows is None else len(rows), batch):  # outputs stay on the device
        xb = X[start:start + batch].to(device) if rows is None else gather(X, rows[start:start + batch], device)
        x = augment.to_input(xb, size, norm)
        x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            h = model.backbone(x)
            f = model.proj(h)
            if tta:
                h2 = model.backbone(x.flip(3))
                h, f = (h + h2) / 2, (f + model.proj(h2)) / 2
            a, b = model.super_head(f), model.sub_head(f)
        for part, t in zip(parts, (a, b, f, h)):
            part.append(t.float())
    if not parts[0]:
        widths = (model.super_head.out_features, model.sub_head.out_features, model.super_head.in_features,
                  model.proj[0].in_features)
        return tuple(torch.empty(0, w) for w in widths)
    return tuple(torch.cat(p).cpu() for p in parts)


def checkpoint_state(model, opt, sched, epoch: int, cfg: TrainConfig, space: LabelSpace, history: list[dict],
                     norm, data_side: int, bank: dict | None = None) -> dict:
    """Everything needed to resume or predict (loadable with weights_only=True)."""
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch, "config": cfg.to_dict(), "space": space.to_dict(), "history": history,
            "norm": [list(norm[0]), list(norm[1])], "data_side": data_side, "bank": bank,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _restore(ckpt: dict, model, opt, sched) -> tuple[int, list[dict]]:
    _load_weights(ckpt, model, opt, sched)
    torch.set_rng_state(ckpt["rng"])
    if ckpt.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    return int(ckpt["epoch"]), list(ckpt["history"])


def _load_weights(ckpt: dict, model, opt, sched) -> None:
    model.load_state_dict(ckpt["model"])
    kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in opt.param_groups]
    opt.load_state_dict(ckpt["optimizer"])
    for group, k in zip(opt.param_groups, kernels):  # a GPU run's fused kernels cannot resume on a CPU
        group.update(k)
    sched.load_state_dict(ckpt["scheduler"])


@dataclass
class _Run:
    """The state `fit` works on: the model, its optimiser and the data on the device."""

    cfg: TrainConfig
    model: HierNet
    opt: torch.optim.Optimizer
    sched: object
    space: LabelSpace
    norm: tuple
    X: torch.Tensor  # uint8 images: on the device, or on the host when they do not fit there
    y_sup: torch.Tensor  # labels and row indices: where X is
    y_sub: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    size: int
    bank: bool  # whether validation also computes the training-feature bank
    ref: torch.Tensor | None = None  # every image's reference features (CPU), for `pretrained_*` scores

    def validate(self) -> Outputs:
        c = self.cfg

        def run(rows):
            return infer(self.model, self.X, self.norm, self.size, c.eval_batch_size, c.precision, c.tta, rows)
        sup_l, sub_l, feats, back = run(self.val)
        out = Outputs(sup_l, sub_l, self.y_sup[self.val].cpu(), self.y_sub[self.val].cpu(), self.space)
        if self.bank:  # unaugmented training images, for feature scores
            rows = self.train[:BANK_SIZE]
            b_sup, b_sub, b_feats, b_back = run(rows)
            out = replace(out, feats=feats, backbone_feats=back, bank=b_feats, bank_backbone=b_back,
                          bank_super_logits=b_sup, bank_sub_logits=b_sub, bank_sub_target=self.y_sub[rows].cpu())
            if self.ref is not None:
                out = replace(out, ref_feats=self.ref[self.val.cpu()], bank_ref=self.ref[rows.cpu()])
        return out

    def state(self, epoch: int, history: list[dict], bank: dict | None) -> dict:
        return checkpoint_state(self.model, self.opt, self.sched, epoch, self.cfg, self.space, history, self.norm,
                                self.X.shape[-1], bank)


def _prepare(cfg: TrainConfig, data: Dataset, scores: tuple[str, ...], fold: int = 0,
             X: torch.Tensor | None = None) -> _Run:
    """One fold's model, optimiser and split; `X` is the dataset already placed (`place`, shared by folds)."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    split = make_split(data, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses, cfg.holdout_superclasses,
                       fold)
    model, bb = build_model(cfg, len(split.space.supers), len(split.space.subs))
    model.to(device=device, memory_format=torch.channels_last)
    X = place(data.images, device) if X is None else X
    y_sup, y_sub = (t.to(X.device) for t in split.space.encode(data.superclass, data.subclass))
    tr = split.train.to(X.device)
    opt = make_optimizer(cfg, model)
    sched = make_schedule(cfg, opt, max(1, math.ceil(len(tr) / cfg.batch_size)))
    bank = any(novelty.needs_features(s) for s in {cfg.novelty_score, *scores})
    return _Run(cfg, model, opt, sched, split.space, bb.norm, X, y_sup, y_sub, tr,
                split.val.to(X.device), cfg.image_size or data.images.shape[-1], bank)


def fit(cfg: TrainConfig, data: Dataset, report: Optional[Report] = None,
        resume: Path | str | dict | None = None, scores: tuple[str, ...] = (),
        progress: Optional[Progress] = None) -> FitResult:
    """Train `cfg` on `data`; after every epoch call `report(EpochReport)`.

    Metrics are the registered training metrics (`metrics.EPOCH_METRICS`) plus the validation metrics of the
    config's novelty score and threshold, with AUROC / FPR@95 of every logit score and of `scores`. With
    `folds` > 1, one model per fold trains in lockstep and the metrics are fold means (`folds.combine_folds`);
    the result, the reported outputs and the checkpoint's model are fold 0's (the others ride along in it).
    `resume` is a checkpoint (path or loaded dict) to continue from. `progress(phase, done, total)` hears of
    every long phase ("reference features" per batch, "training" and "evaluating" per epoch). Raises
    DivergedError on a NaN loss.
    """
    say = progress or _silent
    say("setting up model and split", 0, 0)
    scores = tuple(dict.fromkeys((*novelty.logit_scores(), *scores)))
    device = resolve_device(cfg.device)
    X = place(data.images, device)  # one copy, whatever the folds
    runs = [_prepare(cfg, data, scores, fold, X) for fold in range(cfg.folds)]
    if any(novelty.needs_reference(s) for s in {cfg.novelty_score, *scores}):
        ref = reference_features(cfg, X, say, device, data.share)  # the same for every fold and epoch: once
        for run in runs:
            run.ref = ref
    bf16 = use_bf16(device, cfg.precision, runs[0].model.gpu_bf16)
    start, history = 0, []
    if resume is not None:
        ckpt = resume if isinstance(resume, dict) else checkpoint.load(resume)
        start, history = _restore(ckpt, runs[0].model, runs[0].opt, runs[0].sched)
        for run, saved in zip(runs[1:], ckpt.get("folds") or []):
            _load_weights(saved, run.model, run.opt, run.sched)
    outs = None
    for epoch in range(start, cfg.epochs):
        per_fold = [_epoch(run, epoch, scores, bf16, say) for run in runs]
        m, outs = combine_folds([pm for pm, _ in per_fold]), [o for _, o in per_fold]
        history.append(m)
        if report is not None:
            def state(_e=epoch + 1, _h=list(history), _o=list(outs)):
                return _state(runs, _o, _e, _h)
            report(EpochReport(m, outs[0], lambda path, _s=state: checkpoint.save(_s(), path), state, outs))
    if outs is None:  # resumed after the last epoch: evaluate once so callers get outputs (re-scoring a trial)
        outs = [run.validate() for run in runs]
    return FitResult(runs[0].model, runs[0].space, outs[0], history, runs[0].norm, outs)


def reference_features(cfg: TrainConfig, X: torch.Tensor, progress: Optional[Progress] = None,
                       device: torch.device | None = None, share=None) -> torch.Tensor:
    """The `pretrained_*` scores' frozen ImageNet features of images X (`reference.py`), as `cfg` asks,
    computed on `device` (default: X's), fetched from or published to `share` (a `store.Share`) when given."""
    device = device or X.device
    bf16 = use_bf16(device, cfg.precision, BACKBONES.meta(cfg.reference_backbone).get("gpu_bf16", True))
    return reference.features(X, cfg.reference_backbone, cfg.reference_size, bf16, cfg.eval_batch_size,
                              progress=progress, device=device, share=share)


def _silent(phase: str, done: int = 0, total: int = 0) -> None:
    pass


def _epoch(run: _Run, epoch: int, scores: tuple[str, ...], bf16: bool, say: Progress) -> tuple[dict, Outputs]:
    """Train one epoch, validate, and compute the epoch's metrics."""
    cfg, t0 = run.cfg, time.perf_counter()
    say("training", epoch + 1, cfg.epochs)
    loss_sum = train_one_epoch(run.model, run.opt, run.sched, run.X, run.y_sup, run.y_sub, run.train, cfg,
                               run.norm, run.size, next(run.model.parameters()).device, bf16)
    train_loss = float(loss_sum) / len(run.train)  # the one host sync per epoch
    if not math.isfinite(train_loss):
        raise DivergedError(f"training loss is {train_loss} at epoch {epoch + 1} "
                            f"(lr={cfg.lr}, backbone={cfg.backbone}); lower the learning rate")
    train_time = time.perf_counter() - t0
    say("evaluating", epoch + 1, cfg.epochs)
    out = run.validate()
    m = metrics.evaluate(out, run.space, cfg.novelty_score, cfg.threshold, scores)
    return {**metrics.epoch_metrics(EpochState(epoch + 1, train_loss, len(run.train), train_time,
                                               time.perf_counter() - t0, run.sched.get_last_lr()[0], out)), **m}, out


def _state(runs: list[_Run], outs: list[Outputs], epoch: int, history: list[dict]) -> dict:
    """Fold 0's checkpoint; the other folds' weights, optimisers and schedules under `folds`."""
    state = runs[0].state(epoch, history, outs[0].bank_state())
    if len(runs) > 1:
        state["folds"] = [{"model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                           "scheduler": r.sched.state_dict()} for r in runs[1:]]
    return state
