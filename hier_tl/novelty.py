"""Post-hoc novelty scores, thresholds and the hierarchy rule.

A score is "how much this looks like a seen class" (higher = more familiar). At each level an image is
novel when its score is strictly below that level's threshold (a tie counts as seen).

Hierarchy rule, in this order:
1. the superclass is the argmax of the superclass head; if its score is below the threshold, both
   levels are novel (a novel superclass forces a novel subclass);
2. the subclass is the argmax of the subclass head *among the children of the predicted superclass*
   (a subclass outside the predicted superclass is never output: the superclass head decides);
3. the subclass is novel when the subclass score (on the full subclass head) is below its threshold;
   the superclass stays as predicted.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .config import ConfigError
from .split import NOVEL, LabelSpace

ScoreFn = Callable[..., torch.Tensor]
SCORES: dict[str, ScoreFn] = {}
FEATURE_SCORES: set[str] = set()  # scores that need projection features and a bank of training features


def register_score(name: str, features: bool = False):
    def deco(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        if features:
            FEATURE_SCORES.add(name)
        return fn
    return deco


def compute(name: str, logits: torch.Tensor, feats: torch.Tensor | None = None,
            bank: torch.Tensor | None = None) -> torch.Tensor:
    """Score values for one level; feature scores ignore the logits and use (feats, bank)."""
    fn = get_score(name)
    if name in FEATURE_SCORES:
        if feats is None or bank is None:
            raise ValueError(f"novelty score {name!r} needs features and a training-feature bank "
                             "(they are computed when the score is requested at training time)")
        return fn(feats, bank)
    return fn(logits)


def get_score(name: str) -> ScoreFn:
    if name not in SCORES:
        raise ConfigError(f"unknown novelty score {name!r}; known: {', '.join(sorted(SCORES))}")
    return SCORES[name]


@register_score("msp")
def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (the seed paper's score; its threshold was 0.6)."""
    return logits.float().softmax(-1).amax(-1)


@register_score("maxlogit")
def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """Largest raw logit."""
    return logits.float().amax(-1)


@register_score("energy")
def energy(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy, logsumexp of the logits."""
    return torch.logsumexp(logits.float(), -1)


KNN_K = 10


@register_score("knn", features=True)
def knn(feats: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Cosine similarity to the k-th nearest training feature (k=10) of the shared projection:
    a feature-space score (Sun et al., 2022), the same at both levels."""
    f = torch.nn.functional.normalize(feats.float(), dim=1)
    b = torch.nn.functional.normalize(bank.float(), dim=1)
    k = min(KNN_K, len(b))
    out = []
    for start in range(0, len(f), 1024):
        out.append((f[start:start + 1024] @ b.T).topk(k, dim=1).values[:, -1])
    return torch.cat(out) if out else torch.empty(0)


def resolve_threshold(spec: float | str, seen_scores: torch.Tensor) -> float:
    """A number, or 'tpr:P': the score that keeps a fraction P of the seen validation images as seen."""
    if isinstance(spec, (int, float)):
        return float(spec)
    if isinstance(spec, str) and spec.startswith("tpr:"):
        p = float(spec[4:])
        if not 0 < p <= 1:
            raise ValueError(f"threshold {spec!r}: the TPR target must be in (0, 1]")
        if seen_scores.numel() == 0:
            raise ValueError(f"threshold {spec!r} needs seen validation images to calibrate on")
        return float(torch.quantile(seen_scores.float(), 1 - p))
    try:
        return float(spec)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {spec!r}: expected a number, 'tpr:P' or 'best'") from None


def predict(sup_logits: torch.Tensor, sub_logits: torch.Tensor, space: LabelSpace, score: str,
            thr_sup: float, thr_sub: float, feats: torch.Tensor | None = None,
            bank: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-space predictions with NOVEL (-1) where novel, following the hierarchy rule above."""
    sup = sup_logits.argmax(-1)
    parent = torch.tensor(space.sub_parent, device=sub_logits.device)
    inside = parent[None, :] == sup[:, None]
    sub = sub_logits.float().masked_fill(~inside, -math.inf).argmax(-1)
    sup_novel = compute(score, sup_logits, feats, bank) < thr_sup
    sub_novel = sup_novel | (compute(score, sub_logits, feats, bank) < thr_sub)
    return sup.masked_fill(sup_novel, NOVEL), sub.masked_fill(sub_novel, NOVEL)
