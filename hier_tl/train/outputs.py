"""`Outputs`: the logits, targets and features of a set of images, which every novelty score and metric
reads; saved with each run (`val_outputs.pt`) so any score or threshold can be re-scored without the model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from ..data.taxonomy import LabelSpace
from . import novelty


@dataclass
class Outputs:
    """Logits and targets of a set of images (validation, or new images with no targets), and what feature
    scores need: the images' features and the training bank (features, logits and subclass labels)."""

    super_logits: torch.Tensor
    sub_logits: torch.Tensor
    super_target: torch.Tensor | None = None
    sub_target: torch.Tensor | None = None
    space: LabelSpace | None = None  # what the head positions mean
    feats: torch.Tensor | None = None  # projection features (feature scores only)
    bank: torch.Tensor | None = None  # training-set projection features (feature scores only)
    backbone_feats: torch.Tensor | None = None  # backbone features (before the projection)
    bank_backbone: torch.Tensor | None = None
    bank_super_logits: torch.Tensor | None = None
    bank_sub_logits: torch.Tensor | None = None
    bank_sub_target: torch.Tensor | None = None  # head positions of the bank images' subclasses
    ref_feats: torch.Tensor | None = None  # frozen ImageNet reference features (`reference`, pretrained scores)
    bank_ref: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    BANK_FIELDS = ("bank", "bank_backbone", "bank_super_logits", "bank_sub_logits", "bank_sub_target", "bank_ref")

    def logits(self, level: str) -> torch.Tensor:
        return self.super_logits if level == "super" else self.sub_logits

    def target(self, level: str) -> torch.Tensor:
        return self.super_target if level == "super" else self.sub_target

    def bank_logits(self, level: str) -> torch.Tensor | None:
        return self.bank_super_logits if level == "super" else self.bank_sub_logits

    def bank_state(self) -> dict | None:
        """The bank tensors, as a checkpoint stores them for predictions on new images."""
        return None if self.bank is None else {k: getattr(self, k) for k in self.BANK_FIELDS}

    def to_dict(self) -> dict:
        """Tensors plus the label space as plain data (loadable with weights_only=True)."""
        d = {k: v for k, v in self.__dict__.items() if k != "space" and not k.startswith("_")}
        return {**d, "space": self.space.to_dict() if self.space else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Outputs":
        space = LabelSpace.from_dict(d["space"]) if d.get("space") else None
        names = [f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "space"]
        return cls(**{k: d.get(k) for k in names}, space=space)

    def score(self, name: str, level: str) -> torch.Tensor:
        """Score `name` at `level` for these images (computed once, then cached; once for both levels
        where the score does not depend on the level)."""
        key = (name, "both" if novelty.same_at_both_levels(name) else level)
        if key not in self._cache:
            self._cache[key] = novelty.compute(name, self, level)
        return self._cache[key]

    def with_bank(self, keep: torch.Tensor) -> "Outputs":
        """The same images against the bank rows in `keep` only."""
        return replace(self, _cache={}, **{k: getattr(self, k)[keep] for k in self.BANK_FIELDS
                                           if getattr(self, k) is not None})

    def bank_as_queries(self, rows: torch.Tensor, keep: torch.Tensor) -> "Outputs":
        """Bank rows `rows` as the images, scored against the bank rows in `keep`."""
        q = {"super_logits": self.bank_super_logits, "sub_logits": self.bank_sub_logits, "feats": self.bank,
             "backbone_feats": self.bank_backbone, "ref_feats": self.bank_ref}
        return replace(self.with_bank(keep), super_target=None, sub_target=None,
                       **{k: (v[rows] if v is not None else None) for k, v in q.items()})
