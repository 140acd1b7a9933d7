"""Accuracy at each level (overall / seen / novel), AUROC and FPR@95%TPR, from saved logits.

Everything here works on `Outputs` (validation logits + targets), so any score or threshold can be
re-scored without the model. Targets are head positions with NOVEL (-1) for novel images; images of a
novel superclass are novel at the subclass level too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import novelty
from .split import NOVEL, LabelSpace

LEVELS = ("super", "sub")


@dataclass
class Outputs:
    super_logits: torch.Tensor
    sub_logits: torch.Tensor
    super_target: torch.Tensor
    sub_target: torch.Tensor
    space: LabelSpace | None = None  # what the head positions mean
    feats: torch.Tensor | None = None  # projection features (feature scores only)
    bank: torch.Tensor | None = None  # training-set projection features (feature scores only)

    def logits(self, level: str) -> torch.Tensor:
        return self.super_logits if level == "super" else self.sub_logits

    def target(self, level: str) -> torch.Tensor:
        return self.super_target if level == "super" else self.sub_target

    def to_dict(self) -> dict:
        """Tensors plus the label space as plain data (loadable with weights_only=True)."""
        d = {k: v for k, v in self.__dict__.items() if k != "space"}
        return {**d, "space": self.space.to_dict() if self.space else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Outputs":
        space = LabelSpace.from_dict(d["space"]) if d.get("space") else None
        return cls(d["super_logits"], d["sub_logits"], d["super_target"], d["sub_target"], space,
                   d.get("feats"), d.get("bank"))

    def score(self, name: str, level: str) -> torch.Tensor:
        return novelty.compute(name, self.logits(level), self.feats, self.bank)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Overall, seen and novel accuracy (NaN where a group is empty). A novel image is right when predicted novel."""
    right = (pred == target).float()
    seen = target != NOVEL

    def mean(mask):
        return float(right[mask].mean()) if mask.any() else math.nan
    return {"acc": mean(torch.ones_like(seen)), "seen_acc": mean(seen), "novel_acc": mean(~seen)}


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
    parts = [m[f"{k}_{lvl}_acc"] for lvl in LEVELS for k in ("seen", "novel")]
    parts = [p for p in parts if not math.isnan(p)]
    return sum(parts) / len(parts) if parts else math.nan


def thresholds_for(out: Outputs, score: str, spec: float | str) -> dict[str, float]:
    """Resolve a threshold spec per level; 'best' maximises that level's mean of seen and novel accuracy."""
    res = {}
    for lvl in LEVELS:
        s, seen = out.score(score, lvl), out.target(lvl) != NOVEL
        if spec == "best":
            res[lvl] = _best_threshold(s, seen) if (~seen).any() else novelty.resolve_threshold("tpr:0.95", s[seen])
        else:
            res[lvl] = novelty.resolve_threshold(spec, s[seen])
    return res


def _best_threshold(s: torch.Tensor, seen: torch.Tensor) -> float:
    cands = torch.unique(s.double())
    if len(cands) > 512:
        cands = torch.quantile(s.double(), torch.linspace(0, 1, 512, dtype=torch.float64))
    tpr = (s[seen].double()[None, :] >= cands[:, None]).float().mean(1)
    tnr = (s[~seen].double()[None, :] < cands[:, None]).float().mean(1)
    return float(cands[torch.argmax(tpr + tnr)])


def evaluate(out: Outputs, space: LabelSpace, score: str = "msp", threshold: float | str = 0.6,
             scores: tuple[str, ...] = ()) -> dict[str, float]:
    """All validation metrics for one score/threshold, plus AUROC and FPR@95 of each score in `scores`."""
    thr = thresholds_for(out, score, threshold)
    sup, sub = novelty.predict(out.super_logits, out.sub_logits, space, score, thr["super"], thr["sub"],
                               out.feats, out.bank)
    m: dict[str, float] = {}
    for lvl, pred in (("super", sup), ("sub", sub)):
        acc = accuracy(pred, out.target(lvl))
        m.update({f"{lvl}_acc": acc["acc"], f"seen_{lvl}_acc": acc["seen_acc"], f"novel_{lvl}_acc": acc["novel_acc"]})
        m[f"threshold_{lvl}"] = thr[lvl]
    for name in dict.fromkeys((score, *scores)):
        if name in novelty.FEATURE_SCORES and out.bank is None:
            continue
        for lvl in LEVELS:
            seen, values = out.target(lvl) != NOVEL, out.score(name, lvl)
            m[f"auroc_{lvl}_{name}"] = auroc(values, seen)
            m[f"fpr95_{lvl}_{name}"] = fpr_at_tpr(values, seen)
    m["objective"] = objective(m)
    return m


class ScoreError(ValueError):
    """Predictions and labels do not line up; the message says how."""


def _read_labels_csv(path, what: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise ScoreError(f"{path}: cannot read {what} CSV ({e})") from None
    cols = ["image", "superclass_index", "subclass_index"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ScoreError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(cols)}")
    dup = df["image"][df["image"].duplicated()]
    if len(dup):
        raise ScoreError(f"{path}: image(s) listed more than once: {', '.join(dup.head(5))}")
    for c in cols[1:]:
        bad = df[~df[c].str.strip().str.fullmatch(r"-?\d+")]
        if len(bad):
            raise ScoreError(f"{path} line {bad.index[0] + 2}: {c} {bad[c].iloc[0]!r} is not an integer")
        df[c] = df[c].astype(int)
    return df[cols].set_index("image")


def score_predictions(pred_csv, labels_csv, novel_super: int, novel_sub: int) -> dict[str, float]:
    """Leaderboard scoring: per level, accuracy overall / on seen-class images / on novel images.

    An image is "novel" at a level when its true label there is the novel index; its prediction is right
    only when it is exactly the novel index.
    """
    pred, lab = _read_labels_csv(pred_csv, "predictions"), _read_labels_csv(labels_csv, "labels")
    unknown = pred.index.difference(lab.index)
    if len(unknown):
        raise ScoreError(f"{pred_csv}: {len(unknown)} image(s) not in the labels, e.g. {', '.join(unknown[:5])}")
    missing = lab.index.difference(pred.index)
    if len(missing):
        raise ScoreError(f"{pred_csv}: no prediction for {len(missing)} labelled image(s), e.g. {', '.join(missing[:5])}")
    pred = pred.loc[lab.index]
    out = {}
    for lvl, col, novel in (("super", "superclass_index", novel_super), ("sub", "subclass_index", novel_sub)):
        t = torch.tensor(lab[col].to_numpy())
        p = torch.tensor(pred[col].to_numpy())
        # a literal -1 in a file is just a wrong index, never "novel": map it out of the way first
        p = torch.where(p == NOVEL, novel + 10**9, p)
        t, p = torch.where(t == novel, NOVEL, t), torch.where(p == novel, NOVEL, p)
        for k, v in accuracy(p, t).items():
            out[f"{lvl}_{k}"] = v
    out["n"] = len(lab)
    return out
