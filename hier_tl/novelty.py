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

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
SCORES: dict[str, ScoreFn] = {}


def register_score(name: str):
    def deco(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        return fn
    return deco


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
            thr_sup: float, thr_sub: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-space predictions with NOVEL (-1) where novel, following the hierarchy rule above."""
    fn = get_score(score)
    sup = sup_logits.argmax(-1)
    parent = torch.tensor(space.sub_parent, device=sub_logits.device)
    inside = parent[None, :] == sup[:, None]
    sub = sub_logits.float().masked_fill(~inside, -math.inf).argmax(-1)
    sup_novel = fn(sup_logits) < thr_sup
    sub_novel = sup_novel | (fn(sub_logits) < thr_sub)
    return sup.masked_fill(sup_novel, NOVEL), sub.masked_fill(sub_novel, NOVEL)
