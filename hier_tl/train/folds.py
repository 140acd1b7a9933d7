"""Rotating validation (`folds: N`): one epoch's metrics, and the threshold rows, merged over the folds."""

from __future__ import annotations

import math

import torch

from .metrics import GROUPS, LEVELS, NEW_BREED_SUPER, NEW_SUB, acc_key

FOLD_SPREAD = ("objective", *(acc_key(lvl, g) for lvl in LEVELS for g in GROUPS), NEW_SUB, NEW_BREED_SUPER)
FOLD_SUM = ("train_time", "epoch_time")  # what the epoch cost in all
FOLD_FIRST = ("epoch", "threshold_super", "threshold_sub")  # fold 0's: its model is the one checkpointed


def combine_folds(ms: list[dict]) -> dict:
    """One epoch's metrics over rotation folds: the mean of each (NaN-aware), `<name>_std` (population) for
    the objective and the accuracies, the sum of the times, and fold 0's thresholds."""
    if len(ms) == 1:
        return ms[0]
    out = {}
    for k in dict.fromkeys(k for m in ms for k in m):
        values = torch.tensor([float(m.get(k, math.nan)) for m in ms], dtype=torch.float64)
        ok = values[~values.isnan()]
        if k in FOLD_FIRST:
            out[k] = ms[0][k]
        elif k in FOLD_SUM:
            out[k] = float(ok.sum())
        else:
            out[k] = float(ok.mean()) if len(ok) else math.nan
        if k in FOLD_SPREAD:
            out[f"{k}_std"] = float(ok.std(unbiased=False)) if len(ok) else math.nan
    return out


def mean_rows(per_fold: list[list[dict]]) -> list[dict]:
    """Threshold rows of several folds (same scores x thresholds, same order) averaged field by field."""
    if len(per_fold) == 1:
        return per_fold[0]
    return [{k: (v if isinstance(v, str) or k in FOLD_FIRST else combine_folds([{k: r[k]} for r in rows])[k])
             for k, v in rows[0].items()} for rows in zip(*per_fold)]
