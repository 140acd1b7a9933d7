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

from ..core.config import Threshold
from ..core.errors import ConfigError
from ..data.taxonomy import NOVEL, LabelSpace
from .registries import SCORES

register_score = SCORES.register


def logit_scores() -> list[str]:
    """Scores computed from logits alone: free to evaluate at every epoch."""
    return [n for n in SCORES.names() if not needs_features(n)]


def needs_features(name: str) -> bool:
    """Does this score need features and the training-feature bank (rather than the logits alone)?"""
    return bool(SCORES.meta(name).get("features"))


def needs_reference(name: str) -> bool:
    """Does this score need the frozen ImageNet reference features (`reference.py`)?"""
    return bool(SCORES.meta(name).get("reference"))


def same_at_both_levels(name: str) -> bool:
    """Does this score give one value per image whatever the level (feature-distance scores)?"""
    return bool(SCORES.meta(name).get("same_levels"))


def compute(name: str, out, level: str) -> torch.Tensor:
    """Score values at one level for the images of `out` (a `metrics.Outputs`): a logit score sees that
    level's logits, a feature score the whole `out` (features, bank, bank labels and logits)."""
    fn = SCORES.get(name, where="novelty score")
    if needs_features(name):
        if out.feats is None or out.bank is None:
            raise ConfigError(f"novelty score {name!r} needs features and a training-feature bank "
                              "(they are computed when the score is requested at training time)")
        return fn(out, level)
    return fn(out.logits(level))


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


def knn_similarity(feats: torch.Tensor, bank: torch.Tensor, k: int = KNN_K) -> torch.Tensor:
    """Cosine similarity of each row of `feats` to its k-th nearest row of `bank`."""
    f = torch.nn.functional.normalize(feats.float(), dim=1)
    b = torch.nn.functional.normalize(bank.float(), dim=1)
    k = min(k, len(b))
    out = [(f[s:s + 1024] @ b.T).topk(k, dim=1).values[:, -1] for s in range(0, len(f), 1024)]
    return torch.cat(out) if out else torch.empty(0)


@register_score("knn", features=True, same_levels=True)
def knn(out, level: str) -> torch.Tensor:
    """Cosine similarity to the k-th nearest training feature (k=10) of the shared projection:
    a feature-space score (Sun et al., 2022), the same at both levels."""
    return knn_similarity(out.feats, out.bank)


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


def predict(out, space: LabelSpace, score: str, thr_sup: float,
            thr_sub: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-space predictions for the images of `out` (a `metrics.Outputs`) with NOVEL (-1) where novel,
    following the hierarchy rule above."""
    sup_logits, sub_logits = out.super_logits, out.sub_logits
    sup = sup_logits.argmax(-1)
    parent = torch.tensor(space.sub_parent, device=sub_logits.device)
    inside = parent[None, :] == sup[:, None]
    sub = sub_logits.float().masked_fill(~inside, -math.inf).argmax(-1)
    sup_novel = out.score(score, "super") < thr_sup
    sub_novel = sup_novel | (out.score(score, "sub") < thr_sub)
    return sup.masked_fill(sup_novel, NOVEL), sub.masked_fill(sub_novel, NOVEL)
