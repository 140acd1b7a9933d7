"""A sweep's trials as an Optuna study, from its Parquet tables alone: what the live journal
(optuna-dashboard, `journal.py`) and the report's HPO panels show.

Trial states (Optuna's ``create_trial`` accepts RUNNING, WAITING, COMPLETE, PRUNED and FAIL;
COMPLETE needs a finite value, FAIL must have none). A trial's value, where it has one, is
``final_<metric>``:

=================================  ========================  ====================
sweep status                       live journal              report's HPO panels
=================================  ========================  ====================
completed, finite final value      COMPLETE                  COMPLETE
completed without one              FAIL                      FAIL
stopped (by ASHA), finite value    PRUNED, with that value   COMPLETE
stopped without one                PRUNED, no value          FAIL
errored, unknown                   FAIL                      FAIL
running                            RUNNING                   RUNNING
pending (a retry), interrupted     WAITING                   WAITING
=================================  ========================  ====================

Why a stopped trial differs: the dashboard must say what happened. ASHA pruned it; its last value is kept,
as Optuna's own ``tell`` keeps a pruned trial's last intermediate value, so the dashboard's "Include
PRUNED trials" switch puts it in the history. The report's history, importance and parallel-coordinate
panels are Optuna's, which read COMPLETE trials only, and an ASHA sweep stops most of its trials: as
PRUNED they would vanish, leaving the few survivors (or nothing) to judge the search space by. A stopped
trial's final value is a real measurement of its configuration, taken at the epoch it reached (fewer than a
survivor's), so the report counts it (``build_study(stopped=COMPLETE)``, the default); its
intermediate-values panel shows every trial's curve, so where each stopped stays visible.
An interrupted trial is not a failure: it waits for ``--resume``, which continues it.
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
from optuna.trial import FrozenTrial, TrialState

from ..core.numbers import finite as _finite
from ..core.numbers import missing as _missing
from ..core.numbers import plain as _native
from .space import SAMPLERS

_STATES = {"completed": TrialState.COMPLETE, "running": TrialState.RUNNING,
           "pending": TrialState.WAITING, "interrupted": TrialState.WAITING}
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


def trial_state(status: str, value: float | None,
                stopped: TrialState = TrialState.COMPLETE) -> tuple[TrialState, float | None]:
    """The Optuna state and value of a trial with this sweep ``status`` and finite final ``value`` (or None),
    after the module's table; ``stopped`` is what an ASHA-stopped trial is: PRUNED in the live journal,
    COMPLETE in the report."""
    status = str(status or "").lower()
    state = stopped if status == "stopped" else _STATES.get(status, TrialState.FAIL)
    if state == TrialState.COMPLETE and value is None:
        state = TrialState.FAIL
    return state, value if state in (TrialState.COMPLETE, TrialState.PRUNED) else None


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
        value = round(value)
    if value is None or not dist._contains(dist.to_internal_repr(value)):
        return None
    return value


def space_distributions(space: dict) -> dict[str, tuple[BaseDistribution, list]]:
    """Optuna distributions for the usable keys of a sweep's search space (composites as str)."""
    out = {}
    for key, spec in (space or {}).items():
        parsed = _distribution(spec)
        if parsed is None:
            continue
        _, dist, raw = parsed
        if "+" in key and isinstance(dist, CategoricalDistribution):
            raw = [list(c) if isinstance(c, (list, tuple)) else c for c in raw]
            choices = list(dict.fromkeys(str(tuple(c)) if isinstance(c, list) else str(c)
                                         for c in raw))
            dist = CategoricalDistribution(choices)
        out[key] = (dist, raw)
    return out


def curves(epochs: pd.DataFrame | None, metric: str) -> dict[str, dict[int, float]]:
    """Per trial, ``{epoch: metric}`` from the epochs table (finite values only; a later row of the same
    epoch wins)."""
    out: dict[str, dict[int, float]] = {}
    if epochs is not None and len(epochs) and {"trial_id", "epoch", metric} <= set(epochs.columns):
        for tid, ep, v in zip(epochs["trial_id"].astype(str), epochs["epoch"], epochs[metric]):
            if _finite(v) is not None and _finite(ep) is not None:
                out.setdefault(tid, {})[int(ep)] = float(v)
    return out


def frozen_trial(row: pd.Series, dists: dict[str, tuple[BaseDistribution, list]], metric: str,
                 curve: dict[int, float], stopped: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    """One trials-table row as an Optuna trial (see ``build_study``); ``dists`` from ``space_distributions``."""
    params, pdists = {}, {}
    for key, (dist, raw) in dists.items():
        value = _param_value(row, key, dist, raw)
        if value is not None:
            params[key], pdists[key] = value, dist
    status = str(row.get("status", "")).lower()
    state, value = trial_state(status, _finite(row.get(f"final_{metric}")), stopped)
    return optuna.trial.create_trial(
        state=state, value=value, params=params, distributions=pdists,
        user_attrs={"trial_id": str(row.get("trial_id")), "status": status},
        intermediate_values=dict(sorted(curve.items())))


def build_study(trials: pd.DataFrame, epochs: pd.DataFrame | None, space: dict, metric: str,
                mode: str, stopped: TrialState = TrialState.COMPLETE) -> optuna.Study:
    """An in-memory Optuna study with one trial per row of ``trials``, in row order, its metric named.

    The value is ``final_<metric>``; intermediate values are ``epochs[metric]`` per epoch; the
    state follows the table in the module docstring (``stopped``: the state of an ASHA-stopped
    trial). A parameter whose value is missing, NaN or outside its distribution is left out of
    that trial rather than raising.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    with quiet():
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        study.set_metric_names([metric])
    dists, per_trial = space_distributions(space), curves(epochs, metric)
    study.add_trials([frozen_trial(row, dists, metric, per_trial.get(str(row.get("trial_id")), {}), stopped)
                      for _, row in trials.iterrows()])
    return study
