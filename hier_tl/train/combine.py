"""Ensembles of trained models as one `Outputs`: every novelty score and metric then works on the ensemble.

Members are models of one validation protocol (same classes, same training bank, same images). Combined:

- logits: log of the members' averaged probabilities plus their mean logsumexp, so the softmax is the
  averaged probability (`msp` of the ensemble) and `energy` the members' mean energy;
- features (projection, backbone, and the bank's): each member's row L2-normalised, concatenated and
  divided by sqrt(K), so a cosine similarity is the mean of the members' cosines (`knn`) and distance scores
  (`mahalanobis`, `fusion`) see every member's geometry at once;
- the frozen reference features and targets: one copy (they do not depend on the member).

`disagreement` (a registry score) is the ensemble's own: minus the mutual information between the
prediction and the member, H(mean p) - mean H(p_k) (the BALD disagreement), at each level's head.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from .novelty import register_score
from .outputs import Outputs

SHARED = ("super_target", "sub_target", "ref_feats", "bank_sub_target", "bank_ref")
FEATURES = ("feats", "bank", "backbone_feats", "bank_backbone")
LOGITS = ("super_logits", "sub_logits", "bank_super_logits", "bank_sub_logits")


@dataclass
class EnsembleOutputs(Outputs):
    """`Outputs` of an ensemble, with each member's logits of the images (K x N x C) for `disagreement`."""

    member_super_logits: torch.Tensor | None = None
    member_sub_logits: torch.Tensor | None = None

    def member_logits(self, level: str) -> torch.Tensor | None:
        return self.member_super_logits if level == "super" else self.member_sub_logits

    def bank_as_queries(self, rows: torch.Tensor, keep: torch.Tensor) -> EnsembleOutputs:
        """As `Outputs.bank_as_queries`; the bank has no per-member logits, so `disagreement` is not defined there."""
        return replace(super().bank_as_queries(rows, keep), member_super_logits=None, member_sub_logits=None)


def combine(members: list[Outputs]) -> EnsembleOutputs:
    """One `Outputs` for K members' outputs of the same images (see the module docstring). Raises ConfigError
    when the members disagree on what they describe (classes, images or training bank)."""
    if not members:
        raise ConfigError("an ensemble needs at least one member")
    first = members[0]
    for i, m in enumerate(members[1:], 1):
        _same(first, m, i)
    d = {f.name: getattr(first, f.name) for f in fields(Outputs) if not f.name.startswith("_")}
    for name in LOGITS:
        if getattr(first, name) is not None:
            d[name] = mean_probability_logits(torch.stack([getattr(m, name) for m in members]))
    for name in FEATURES:
        if getattr(first, name) is not None:
            joined = torch.cat([F.normalize(getattr(m, name).float(), dim=1) for m in members], 1)
            d[name] = joined / len(members) ** 0.5
    return EnsembleOutputs(**d, member_super_logits=torch.stack([m.super_logits.float() for m in members]),
                           member_sub_logits=torch.stack([m.sub_logits.float() for m in members]))


def _same(a: Outputs, b: Outputs, i: int) -> None:
    if a.space != b.space:
        raise ConfigError(f"ensemble member {i} predicts other classes than member 0 (a different protocol or "
                          "split): ensemble trials of one protocol")
    for name in SHARED + ("super_logits",):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and (x.shape != y.shape or (
                name in SHARED and not torch.equal(x, y)))):
            raise ConfigError(f"ensemble member {i} has other {name} than member 0 (different images or training "
                              "bank): ensemble trials of one protocol and split")


def mean_probability_logits(logits: torch.Tensor) -> torch.Tensor:
    """K x N x C member logits -> N x C logits whose softmax is the members' mean probability and whose
    logsumexp is their mean logsumexp (energy)."""
    z = logits.float()
    return torch.logsumexp(z.log_softmax(-1), 0) - torch.log(torch.tensor(float(len(z)))) + \
        torch.logsumexp(z, -1).mean(0)[:, None]


@register_score("disagreement", features=True)
def disagreement(out, level: str) -> torch.Tensor:
    """Minus the members' mutual information at this level (0 when every member predicts alike)."""
    members = getattr(out, f"member_{level}_logits", None)
    if members is None:
        raise ConfigError("novelty score 'disagreement' needs an ensemble's outputs (predict --ensemble K "
                          "--ensemble-score disagreement); a single model has no members to disagree")
    p = members.float().softmax(-1)
    mean = p.mean(0)
    entropy = -(mean * mean.clamp(min=1e-12).log()).sum(-1)
    member_entropy = -(p * p.clamp(min=1e-12).log()).sum(-1).mean(0)
    return -(entropy - member_entropy)
