"""A sweep's trials as an Optuna study, from its Parquet tables alone: what the live journal
(optuna-dashboard) and the report's HPO panels both show.

Trial-state mapping (Optuna's ``create_trial`` accepts RUNNING, WAITING, COMPLETE, PRUNED and FAIL;
COMPLETE needs a finite value and FAIL must have none):

==========================================  ==========
sweep status                                Optuna
==========================================  ==========
completed / stopped with finite final value COMPLETE
completed / stopped without one             FAIL
errored, interrupted, unknown               FAIL
running                                     RUNNING
pending                                     WAITING
==========================================  ==========
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from ..core.numbers import finite as _finite
from ..core.numbers import missing as _missing
from ..core.numbers import plain as _native
from .space import SAMPLERS

_STATES = {"completed": TrialState.COMPLETE, "stopped": TrialState.COMPLETE,
           "running": TrialState.RUNNING, "pending": TrialState.WAITING}
_CATEGORICAL_TYPES = (type(None), bool, int, float, str)

def same(a: Any, b: Any) -> bool:
    """Loose equality between a search-space value and a table value (0.6 == "0.6" == 0.6000)."""
    a, b = _native(a), _native(b)
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence optuna's ExperimentalWarning/user warnings and its INFO/WARNING log lines."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(old)



# ----------------------------------------------------------------------------- study
def _distribution(spec: Any) -> tuple[str, BaseDistribution, list] | None:
    """``{sampler: args}`` -> (sampler, optuna distribution, raw choices); None if unusable."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    kind, args = next(iter(spec.items()))
    if kind not in SAMPLERS:
        return None
    sampler = SAMPLERS.get(kind)
    try:
        if sampler.lists:
            raw = list(args)
            return kind, sampler.distribution([c if isinstance(c, _CATEGORICAL_TYPES) else str(c) for c in raw]), raw
        return kind, sampler.distribution(args), []
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _param_value(row: pd.Series, key: str, dist: BaseDistribution, raw: list) -> Any:
    """The trial's value of ``key`` in the distribution's terms, or None if missing/out of range."""
    cols = key.split("+") if "+" in key else [key]
    if any(c not in row.index or _missing(row[c]) for c in cols):
        return None
    vals = [_native(row[c]) for c in cols]
    if isinstance(dist, CategoricalDistribution):
        for c in raw:
            parts = list(c) if len(cols) > 1 and isinstance(c, (list, tuple)) else [c]
            if len(parts) == len(vals) and all(same(p, v) for p, v in zip(parts, vals)):
                if len(cols) > 1:
                    return str(tuple(parts))
                return c if isinstance(c, _CATEGORICAL_TYPES) else str(c)
        return None
    value = _finite(vals[0])
    if value is not None and isinstance(dist, IntDistribution):
        value = int(round(value))
    if value is None or not dist._contains(dist.to_internal_repr(value)):
        return None
    return value


def _space_distributions(space: dict) -> dict[str, tuple[BaseDistribution, list]]:
    """Optuna distributions for the usable keys of a sweep's search space (composites as str)."""
    out = {}
    for key, spec in (space or {}).items():
        parsed = _distribution(spec)
        if parsed is None:
            continue
        sampler, dist, raw = parsed
        if "+" in key and isinstance(dist, CategoricalDistribution):
            raw = [list(c) if isinstance(c, (list, tuple)) else c for c in raw]
            choices = list(dict.fromkeys(str(tuple(c)) if isinstance(c, list) else str(c)
                                         for c in raw))
            dist = CategoricalDistribution(choices)
        out[key] = (dist, raw)
    return out


def build_study(trials: pd.DataFrame, epochs: pd.DataFrame | None, space: dict, metric: str,
                mode: str) -> optuna.Study:
    """An in-memory Optuna study with one trial per row of ``trials``, in row order.

    The value is ``final_<metric>``; intermediate values are ``epochs[metric]`` per epoch; the
    state follows the table in the module docstring. A parameter whose value is missing, NaN or
    outside its distribution is left out of that trial rather than raising.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    with quiet():
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    dists = _space_distributions(space)
    curves: dict[str, dict[int, float]] = {}
    if epochs is not None and len(epochs) and {"trial_id", "epoch", metric} <= set(epochs.columns):
        for tid, ep, v in zip(epochs["trial_id"].astype(str), epochs["epoch"], epochs[metric]):
            if _finite(v) is not None and _finite(ep) is not None:
                curves.setdefault(tid, {})[int(ep)] = float(v)
    frozen = []
    for _, row in trials.iterrows():
        tid, status = str(row.get("trial_id")), str(row.get("status", "")).lower()
        params, pdists = {}, {}
        for key, (dist, raw) in dists.items():
            value = _param_value(row, key, dist, raw)
            if value is not None:
                params[key], pdists[key] = value, dist
        value = _finite(row.get(f"final_{metric}"))
        state = _STATES.get(status, TrialState.FAIL)
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        frozen.append(optuna.trial.create_trial(
            state=state, value=value if state == TrialState.COMPLETE else None,
            params=params, distributions=pdists, user_attrs={"trial_id": tid, "status": status},
            intermediate_values=dict(sorted(curves.get(tid, {}).items()))))
    study.add_trials(frozen)
    return study


