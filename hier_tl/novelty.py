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

import torch

from .config import Threshold
from .errors import ConfigError
from .registry import SCORES
from .taxonomy import NOVEL, LabelSpace

register_score = SCORES.register


def logit_scores() -> list[str]:
    """Scores computed from logits alone: free to evaluate at every epoch."""
    return [n for n in SCORES.names() if not needs_features(n)]


def needs_features(name: str) -> bool:
    """Does this score compare projection features with a bank of training features (rather than logits)?"""
    return bool(SCORES.meta(name).get("features"))


def compute(name: str, logits: torch.Tensor, feats: torch.Tensor | None = None,
            bank: torch.Tensor | None = None) -> torch.Tensor:
    """Score values for one level; feature scores ignore the logits and use (feats, bank)."""
    fn = SCORES.get(name, where="novelty score")
    if needs_features(name):
        if feats is None or bank is None:
            raise ConfigError(f"novelty score {name!r} needs features and a training-feature bank "
                              "(they are computed when the score is requested at training time)")
        return fn(feats, bank)
    return fn(logits)


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


def resolve_threshold(spec: Threshold, seen_scores: torch.Tensor) -> float:
    """A number as is; `tpr:P`: the score that keeps a fraction P of the seen validation images as seen."""
    spec = Threshold.parse(spec)
    if spec.kind == "value":
        return spec.value
    if spec.kind != "tpr":
        raise ValueError(f"threshold {spec} is resolved against novel images (metrics.thresholds_for)")
    if seen_scores.numel() == 0:
        raise ConfigError(f"threshold {spec} needs seen validation images to calibrate on")
    return float(torch.quantile(seen_scores.float(), 1 - spec.value))


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
