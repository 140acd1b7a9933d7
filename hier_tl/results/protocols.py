"""Validation protocols: a trial's objective is comparable only to trials validated the same way.

The objective is the mean of the seen / novel accuracies that exist on a validation set: a protocol that holds
out a superclass adds a term another protocol lacks, and folds, the validation fraction and the split seed
change what is measured. So every ranking (`best`, `predict`, the progress line, the comparison table, the
Pareto view, the Optuna panels) compares trials of one protocol, the keys `TrainConfig` marks `PROTOCOL`.
Which protocol decides: `--protocol`, else the sweep file's `decide_on`, else the only one the sweep ran; a
sweep that spans several and names none is asked which.
"""

from __future__ import annotations

import pandas as pd

from ..core.errors import SelectionError
from ..train.train_config import PROTOCOL_KEYS, protocol_label

COLUMN = "protocol"


def protocol_column(trials: pd.DataFrame) -> pd.Series:
    """Each row's protocol label: the recorded `protocol` column, or computed from the config columns (for
    tables written before it was recorded)."""
    if trials.empty:
        return pd.Series([], dtype=object, index=trials.index)
    if COLUMN in trials and trials[COLUMN].notna().all():
        return trials[COLUMN].astype(str)
    return pd.Series([protocol_label({k: r.get(k) for k in PROTOCOL_KEYS if k in r and r.get(k) == r.get(k)})
                      for r in trials.to_dict("records")], index=trials.index, dtype=object)


def with_protocol(trials: pd.DataFrame) -> pd.DataFrame:
    """The table with its `protocol` column filled in."""
    return trials.assign(**{COLUMN: protocol_column(trials)}) if len(trials) else trials


def protocols(trials: pd.DataFrame) -> list[str]:
    """The protocols of these trials, in the order their first trial appears."""
    return list(dict.fromkeys(protocol_column(trials)))


def ordered(trials: pd.DataFrame, first: str | None = None) -> list[str]:
    """The protocols as numbered everywhere (`P1`, `--protocol 1`): `first` (the deciding one) first, then the
    others in the order their first trial appears."""
    found = protocols(trials)
    return ([first] if first in found else []) + [p for p in found if p != first]


def listing(trials: pd.DataFrame, meta: dict | None = None) -> str:
    """`1 = '3 sub held out, 3 folds' (4 trials); 2 = ...`: what `--protocol` accepts."""
    counts = {k: int(v) for k, v in protocol_column(trials).value_counts().items()}
    return "; ".join(f"{i} = '{p}' ({counts[p]} trial{'s' * (counts[p] != 1)})"
                     for i, p in enumerate(ordered(trials, named_in_sweep(meta or {})), 1))


def named_in_sweep(meta: dict) -> str | None:
    """The protocol a sweep file's `decide_on` names (None if it names none)."""
    decide = (meta or {}).get("decide_on") or {}
    return protocol_label({**(meta.get("base") or {}), **decide}) if decide else None


def decision(trials: pd.DataFrame, meta: dict | None = None, protocol: str | None = None) -> str:
    """The protocol whose trials are ranked: `protocol` (a label, or its number in `listing`), else the sweep's
    `decide_on`, else the only one. SelectionError, listing the choices, when that is ambiguous or unknown."""
    named = named_in_sweep(meta or {})
    found = ordered(trials, named)
    if protocol:
        if protocol.strip().isdigit() and 1 <= int(protocol) <= len(found):
            return found[int(protocol) - 1]
        if protocol in found:
            return protocol
        raise SelectionError(f"--protocol {protocol!r} is not a protocol of this sweep; its protocols: "
                             f"{listing(trials, meta)}")
    if named is not None:
        if named not in found:
            raise SelectionError(f"the sweep's decide_on names protocol '{named}', which no trial has yet; its "
                                 f"protocols: {listing(trials, meta)}. Choose one with --protocol")
        return named
    if len(found) == 1:
        return found[0]
    raise SelectionError(f"this sweep validated its trials under {len(found)} protocols, whose objectives are not "
                         f"comparable: choose one with --protocol N (or name it in the sweep file's decide_on): "
                         f"{listing(trials)}")


def within(trials: pd.DataFrame, label: str) -> pd.DataFrame:
    """The trials of one protocol."""
    return trials[protocol_column(trials) == label]
