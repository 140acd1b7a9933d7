"""Accuracy at each level (overall / seen / novel), AUROC and FPR@95%TPR, from saved logits.

Everything here works on `Outputs` (validation logits + targets), so any score or threshold can be
re-scored without the model. Targets are head positions with NOVEL (-1) for novel images; images of a
novel superclass are novel at the subclass level too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import Threshold
from ..data.taxonomy import NOVEL, LabelSpace
from . import novelty
from .outputs import Outputs
from .registries import EPOCH_METRICS

LEVELS = ("super", "sub")
GROUPS = ("", "seen_", "novel_")  # all images, seen-class images, novel images


def acc_key(level: str, group: str = "seen_") -> str:
    """The one naming scheme for accuracies: `seen_super_acc`, `novel_sub_acc`, `super_acc`."""
    return f"{group}{level}_acc"


def score_key(kind: str, level: str, score: str = "") -> str:
    """Separation metrics of a novelty score: `auroc_sub_knn`, `fpr95_super_msp` (`auroc_sub` in threshold rows)."""
    return f"{kind}_{level}" + (f"_{score}" if score else "")


def metric_mode(name: str) -> str:
    """Whether a larger value of metric `name` is better ("max") or a smaller one ("min")."""
    base = name.removeprefix("final_").removeprefix("best_")
    if base in EPOCH_METRICS:
        return EPOCH_METRICS.meta(base).get("mode", "max")
    return "min" if base.startswith("fpr95_") or base in LOWER_IS_BETTER else "max"


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Overall, seen and novel accuracy (NaN where a group is empty). A novel image is right when predicted novel."""
    right = (pred == target).float()
    seen = target != NOVEL

    def mean(mask):
        return float(right[mask].mean()) if mask.any() else math.nan
    return {"acc": mean(torch.ones_like(seen)), "seen_acc": mean(seen), "novel_acc": mean(~seen)}


NEW_SUB = "novel_sub_seen_super_acc"  # novel subclasses of a seen superclass (a new breed of a known animal)
NEW_BREED_SUPER = "new_breed_as_novel_super"  # new breeds wrongly called a novel superclass
LOWER_IS_BETTER = (NEW_BREED_SUPER,)


def new_breeds(out: Outputs) -> torch.Tensor:
    """Which images are of a novel subclass of a seen superclass (a new breed of a known animal)."""
    return (out.super_target != NOVEL) & (out.sub_target == NOVEL)


def new_subclass_acc(out: Outputs, sub_pred: torch.Tensor) -> float:
    """Fraction of the images of a novel subclass whose superclass is seen that are called novel at the
    subclass level (NaN when validation holds none). `novel_sub_acc` mixes them with the images of novel
    superclasses, so it depends on how many of each a validation set holds; this does not."""
    return _novel_fraction(sub_pred, new_breeds(out))


def new_breed_as_novel_super(out: Outputs, sup_pred: torch.Tensor) -> float:
    """Fraction of the images of a novel subclass whose superclass is seen that are called a novel
    *superclass* (NaN when validation holds none): a wrong superclass for a known kind of animal, which
    `seen_super_acc` dilutes among the images of trained subclasses. Lower is better."""
    return _novel_fraction(sup_pred, new_breeds(out))


def _novel_fraction(pred: torch.Tensor, keep: torch.Tensor) -> float:
    return float((pred[keep] == NOVEL).float().mean()) if keep.any() else math.nan


SUPER_MARGIN = "super_margin"  # where the superclass threshold sits among the known breeds (refit transfers it)


def super_margin(out: Outputs, score: str, threshold: float) -> float:
    """(median - threshold) / (median - 5th percentile) of the superclass `score` over the validation images of
    trained subclasses: how far below the known breeds the superclass threshold sits, in units of their spread.
    A rule calibrated on validation that holds out new breeds sits lower than one calibrated on known breeds
    alone; a refit, whose calibration images are all known breeds, keeps the trial's margin (`predict.refit`).
    NaN where validation holds no new breed (nothing shaped the margin) or fewer than two known-breed images."""
    known = (out.super_target != NOVEL) & (out.sub_target != NOVEL)
    if int(known.sum()) < 2 or not new_breeds(out).any():
        return math.nan
    return margin_of(out.score(score, "super")[known], threshold)


def margin_of(known: torch.Tensor, threshold: float) -> float:
    """`super_margin` of `threshold` against the known breeds' scores `known`."""
    med, spread = _median_spread(known)
    return float((med - threshold) / spread)


def threshold_at_margin(known: torch.Tensor, margin: float) -> float:
    """The threshold `margin` spreads below the known breeds' median (the inverse of `margin_of`)."""
    med, spread = _median_spread(known)
    return float(med - margin * spread)


def _median_spread(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    med, low = torch.quantile(x.double(), torch.tensor([0.5, 0.05], dtype=torch.float64))
    return med, (med - low).clamp(min=1e-12)


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` separating positive (seen) from negative (novel); ties count half."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = _average_ranks(scores.double())
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(x)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    uniq, inverse = torch.unique(sorted_x, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inverse, ranks[order])
    counts = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(x))
    ranks[order] = (sums / counts)[inverse]
    return ranks


def fpr_at_tpr(scores: torch.Tensor, positive: torch.Tensor, tpr: float = 0.95) -> float:
    """Fraction of novel images still called seen at the threshold that keeps `tpr` of the seen ones."""
    if positive.all() or not positive.any():
        return math.nan
    thr = torch.quantile(scores[positive].double(), 1 - tpr)
    return float((scores[~positive].double() >= thr).float().mean())


def objective(m: dict[str, float]) -> float:
    """Mean of the seen/novel accuracies at both levels that exist on this validation set."""
    parts = [m[acc_key(lvl, g)] for lvl in LEVELS for g in ("seen_", "novel_")]
    parts = [p for p in parts if not math.isnan(p)]
    return sum(parts) / len(parts) if parts else math.nan


def thresholds_for(out: Outputs, score: str, spec: float | str | Threshold) -> dict[str, float]:
    """Resolve a threshold per level (one rule for both, or `SUPER/SUB`); 'best' maximises that level's mean
    of seen and novel accuracy (and falls back to tpr:0.95 on a level whose validation holds no novel image)."""
    rules, res = Threshold.per_level(spec), {}
    for lvl in LEVELS:
        rule, s, seen = rules[lvl], out.score(score, lvl), out.target(lvl) != NOVEL
        if rule.kind == "best":
            res[lvl] = _best_threshold(s, seen) if (~seen).any() else novelty.resolve_threshold(
                Threshold("tpr", 0.95), s[seen])
        else:
            res[lvl] = novelty.resolve_threshold(rule, s[seen])
    return res


def _best_threshold(s: torch.Tensor, seen: torch.Tensor) -> float:
    cands = torch.unique(s.double())
    if len(cands) > 512:
        cands = torch.quantile(s.double(), torch.linspace(0, 1, 512, dtype=torch.float64))
    tpr = (s[seen].double()[None, :] >= cands[:, None]).float().mean(1)
    tnr = (s[~seen].double()[None, :] < cands[:, None]).float().mean(1)
    return float(cands[torch.argmax(tpr + tnr)])


def evaluate(out: Outputs, space: LabelSpace, score: str = "msp", threshold: float | str | Threshold = 0.6,
             scores: tuple[str, ...] = ()) -> dict[str, float]:
    """All validation metrics for one score/threshold, plus AUROC and FPR@95 of each score in `scores`."""
    thr = thresholds_for(out, score, threshold)
    sup, sub = novelty.predict(out, space, score, thr["super"], thr["sub"])
    m: dict[str, float] = {}
    for lvl, pred in (("super", sup), ("sub", sub)):
        acc = accuracy(pred, out.target(lvl))
        m.update({acc_key(lvl, g): acc[f"{g}acc"] for g in GROUPS})
        m[f"threshold_{lvl}"] = thr[lvl]
    m[NEW_SUB], m[NEW_BREED_SUPER] = new_subclass_acc(out, sub), new_breed_as_novel_super(out, sup)
    m[SUPER_MARGIN] = super_margin(out, score, thr["super"])
    for name in dict.fromkeys((score, *scores)):
        if novelty.needs_features(name) and out.bank is None:
            continue
        for lvl in LEVELS:
            seen, values = out.target(lvl) != NOVEL, out.score(name, lvl)
            m[score_key("auroc", lvl, name)] = auroc(values, seen)
            m[score_key("fpr95", lvl, name)] = fpr_at_tpr(values, seen)
    m["objective"] = objective(m)
    return m


@dataclass
class EpochState:
    """What the trainer knows at the end of an epoch; every registered epoch metric is computed from it."""

    epoch: int
    train_loss: float  # mean over the epoch's training images
    train_images: int
    train_time: float  # seconds in the training loop
    epoch_time: float  # seconds for training + validation
    lr: float  # the schedule's learning rate at the end of the epoch
    outputs: Outputs  # validation outputs


register_epoch_metric = EPOCH_METRICS.register
# Training metrics: one registration each puts a metric into epochs.parquet, into trials replayed from the
# shared-run cache, into the trials table as final_<name> and (with `label`) into the comparison table.


@register_epoch_metric("train_loss", mode="min")
def train_loss(s: EpochState) -> float:
    return s.train_loss


@register_epoch_metric("val_loss", mode="min")
def validation_loss(s: EpochState) -> float:
    """Cross-entropy of both heads on seen validation images (novel ones have no target)."""
    loss, out = 0.0, s.outputs
    for lvl in LEVELS:
        t = out.target(lvl)
        keep = t != NOVEL
        if keep.any():
            loss += float(F.cross_entropy(out.logits(lvl)[keep], t[keep]))
    return loss


@register_epoch_metric("train_time", mode="min")
def train_time(s: EpochState) -> float:
    return s.train_time


@register_epoch_metric("epoch_time", mode="min")
def epoch_time(s: EpochState) -> float:
    return s.epoch_time


@register_epoch_metric("images_per_s", label="img/s", fmt="{:.0f}")
def images_per_s(s: EpochState) -> float:
    return s.train_images / max(s.train_time, 1e-9)


@register_epoch_metric("current_lr", mode="min")
def current_lr(s: EpochState) -> float:
    return s.lr


def reported_metrics(scores: tuple[str, ...] = ()) -> set[str]:
    """Every metric name an epoch report carries when AUROC / FPR@95 are computed for `scores`."""
    names = {"epoch", "objective", *EPOCH_METRICS.names()}
    names |= {acc_key(lvl, g) for lvl in LEVELS for g in GROUPS} | {f"threshold_{lvl}" for lvl in LEVELS}
    names |= {NEW_SUB, NEW_BREED_SUPER, SUPER_MARGIN}
    for score in dict.fromkeys((*novelty.logit_scores(), *scores)):
        names |= {score_key(k, lvl, score) for k in ("auroc", "fpr95") for lvl in LEVELS}
    return names


def epoch_metrics(state: EpochState) -> dict[str, float]:
    """`epoch` plus every registered training metric."""
    return {"epoch": state.epoch, **{name: float(EPOCH_METRICS.get(name)(state)) for name in EPOCH_METRICS.names()}}


def threshold_rows(out: Outputs, scores, thresholds) -> list[dict]:
    """One row per (score, threshold): the four seen/novel accuracies, the two new-breed rates, the objective
    and the AUROC."""
    rows = []
    for score in scores:
        for thr in thresholds:
            m = evaluate(out, out.space, score, thr)
            row = {"score": score, "threshold": str(thr), **{f"threshold_{lvl}": m[f"threshold_{lvl}"] for lvl in LEVELS}}
            row.update({acc_key(lvl, g): m[acc_key(lvl, g)] for lvl in LEVELS for g in ("seen_", "novel_")})
            row.update({k: m[k] for k in (NEW_SUB, NEW_BREED_SUPER, "objective")})
            row.update({score_key("auroc", lvl): m[score_key("auroc", lvl, score)] for lvl in LEVELS})
            rows.append(row)
    return rows
