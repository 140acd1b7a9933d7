"""Seeded train/validation splits, stratified by subclass, with an open-set option.

Open-set validation holds out K subclasses per superclass and/or whole superclasses: their images go to
validation only, relabelled as novel at the right level (a held-out subclass keeps its true superclass).
Heads are trained over the classes that remain; `LabelSpace` maps head positions to mapping-file indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError
from .dataset import Dataset
from .taxonomy import LabelSpace


@dataclass
class Split:
    train: torch.Tensor  # dataset row indices
    val: torch.Tensor
    space: LabelSpace
    held_out_supers: tuple[int, ...] = ()
    held_out_subs: tuple[int, ...] = ()


def make_split(ds: Dataset, val_fraction: float = 0.1, seed: int = 0,
               holdout_subclasses: int = 0, holdout_superclasses: int = 0, fold: int = 0) -> Split:
    """Deterministic for a given seed. Raises ConfigError when the hold-out would leave nothing to train.

    `fold` rotates the protocol: fold f holds out the superclasses f places after fold 0's (in index
    order, wrapping: n folds cover every superclass) and draws its held-out subclasses and its validation
    images afresh (seeded by (seed, f)). Fold 0 is the plain split."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    tax = ds.taxonomy
    present_supers = sorted(set(ds.superclass.tolist()))
    if holdout_superclasses >= len(present_supers):
        raise ConfigError(f"holdout_superclasses={holdout_superclasses} leaves no superclass to train on "
                         f"({len(present_supers)} present)")
    held_sup = sorted(int(s) for s in rng.choice(present_supers, holdout_superclasses, replace=False))
    if fold:
        held_sup, rng = _rotate(held_sup, present_supers, fold), np.random.default_rng([seed, fold])
    held_sub = []
    for s in present_supers:
        if s in held_sup:
            continue
        kids = sorted(set(ds.subclass[ds.superclass == s].tolist()))
        if holdout_subclasses >= len(kids):
            raise ConfigError(f"holdout_subclasses={holdout_subclasses} leaves no subclass of superclass "
                             f"{s} ({tax.superclass.names[s]!r}, {len(kids)} subclasses) to train on")
        held_sub += sorted(int(k) for k in rng.choice(kids, holdout_subclasses, replace=False))
    held = torch.isin(ds.superclass, torch.tensor(held_sup, dtype=torch.int64)) | \
        torch.isin(ds.subclass, torch.tensor(held_sub, dtype=torch.int64))
    train, val = [], [torch.nonzero(held).flatten().tolist()]
    for sub in sorted(set(ds.subclass[~held].tolist())):  # stratified by subclass
        rows = torch.nonzero((ds.subclass == sub) & ~held).flatten().numpy()
        rows = rows[rng.permutation(len(rows))]
        n_val = int(round(val_fraction * len(rows)))
        if val_fraction > 0 and len(rows) >= 2:
            n_val = max(n_val, 1)  # every class is validated, however small
        n_val = min(n_val, len(rows) - 1)
        val.append(rows[:n_val].tolist())
        train.append(rows[n_val:].tolist())
    supers = tuple(s for s in present_supers if s not in held_sup)
    subs = tuple(sorted(set(ds.subclass[~held].tolist())))
    parent = tuple(supers.index(tax.parent[s]) for s in subs)
    space = LabelSpace(supers, subs, parent, tax.superclass.novel, tax.subclass.novel)
    flat = lambda parts: torch.tensor(sorted(i for p in parts for i in p), dtype=torch.int64)  # noqa: E731
    return Split(flat(train), flat(val), space, tuple(held_sup), tuple(held_sub))


def _rotate(held: list[int], present: list[int], fold: int) -> list[int]:
    """Each held-out superclass moved `fold` places on among the present ones (wrapping)."""
    return sorted(present[(present.index(s) + fold) % len(present)] for s in held)
