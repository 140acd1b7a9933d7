"""Standard hyperparameter-optimisation analysis of a sweep, drawn from its Parquet tables alone.

The ``trials``/``epochs``/``thresholds`` tables (and the sweep file's search space) are enough to
rebuild an in-memory Optuna study and draw Optuna's usual HPO panels (importance, parallel
coordinates, history, learning curves), and to place every novelty-threshold operating point on a
seen-vs-novel accuracy plane with its Pareto front. Nothing here needs Ray, a live sweep or a
checkpoint, so it works the same for finished and interrupted sweeps.

This is a leaf module: it imports only the standard library, numpy, pandas, optuna and matplotlib.

Trial-state mapping (Optuna 4/5 ``create_trial`` accepts RUNNING, WAITING, COMPLETE, PRUNED and
FAIL; COMPLETE needs a finite value and FAIL must have none):

==========================================  ==========
sweep status                                Optuna
==========================================  ==========
completed / stopped with finite final value COMPLETE
completed / stopped without one             FAIL
errored, interrupted, unknown               FAIL
running                                     RUNNING
pending                                     WAITING
==========================================  ==========

"stopped" (ended early by the scheduler) stays COMPLETE, not PRUNED, so that its value counts in
the history and importance panels. "interrupted" is FAIL: the trial never finished, which is what
Optuna itself records for a trial whose worker died.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from .fileio import atomic_path  # noqa: E402

__all__ = ["build_study", "draw_hpo_plots", "pareto_front", "plot_seen_vs_novel"]

_LEVELS = {"super": "superclass", "sub": "subclass"}
_PANELS = {  # title -> (file name, optuna.visualization.matplotlib function name)
    "Hyperparameter importance": ("hpo_importance.png", "plot_param_importances"),
    "Parallel coordinates": ("hpo_parallel.png", "plot_parallel_coordinate"),
    "Optimization history": ("hpo_history.png", "plot_optimization_history"),
    "Intermediate values": ("hpo_intermediate.png", "plot_intermediate_values"),
}
_STATES = {"completed": TrialState.COMPLETE, "stopped": TrialState.COMPLETE,
           "running": TrialState.RUNNING, "pending": TrialState.WAITING}
_CATEGORICAL_TYPES = (type(None), bool, int, float, str)


# ----------------------------------------------------------------------------- small helpers
def _native(v: Any) -> Any:
    """numpy scalars/arrays -> python objects, so that values compare and print plainly."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if isinstance(v, np.generic) else v


def _missing(v: Any) -> bool:
    """True for None, NaN, pd.NA and NaT (but not for lists or strings)."""
    if v is None:
        return True
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _finite(v: Any) -> float | None:
    """``float(v)`` when it is a finite number, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _same(a: Any, b: Any) -> bool:
    """Loose equality between a search-space value and a table value (0.6 == "0.6" == 0.6000)."""
    a, b = _native(a), _native(b)
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence optuna's ExperimentalWarning/user warnings and its INFO/WARNING log lines."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(old)


def _save_atomic(fig: Any, path: str) -> None:
    """Write ``fig`` as PNG through ``fileio.atomic_path``: never a partial file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _one_line(exc: BaseException) -> str:
    """An exception as one short line."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}"[:200]


# ----------------------------------------------------------------------------- study
def _distribution(spec: Any) -> tuple[str, BaseDistribution, list] | None:
    """``{sampler: args}`` -> (sampler, optuna distribution, raw choices); None if unusable."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    sampler, args = next(iter(spec.items()))
    try:
        if sampler in ("choice", "grid"):
            raw = list(args)
            choices = [c if isinstance(c, _CATEGORICAL_TYPES) else str(c) for c in raw]
            return sampler, CategoricalDistribution(list(dict.fromkeys(choices))), raw
        lo, hi = float(args[0]), float(args[1])
        if sampler == "uniform":
            return sampler, FloatDistribution(lo, hi), []
        if sampler == "loguniform":
            return sampler, FloatDistribution(lo, hi, log=True), []
        if sampler == "randint":  # Ray's hi is exclusive
            return sampler, IntDistribution(int(args[0]), int(args[1]) - 1), []
        if sampler == "quniform":
            q = float(args[2])
            on_grid = all(math.isclose(x / q, round(x / q), abs_tol=1e-9) for x in (lo, hi))
            return sampler, FloatDistribution(lo, hi, step=q if on_grid else None), []
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
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
            if len(parts) == len(vals) and all(_same(p, v) for p, v in zip(parts, vals)):
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
    with _quiet():
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


# ----------------------------------------------------------------------------- HPO panels
def _importance_evaluator() -> Any:
    """A deterministic, fast importance evaluator (PED-ANOVA; fANOVA(seed=0) on old optuna)."""
    importance = optuna.importance
    if hasattr(importance, "PedAnovaImportanceEvaluator"):  # optuna >= 3.6, no sklearn needed
        return importance.PedAnovaImportanceEvaluator()
    return importance.FanovaImportanceEvaluator(n_trees=16, max_depth=8, seed=0)


def _why_not(study: optuna.Study, title: str) -> str | None:
    """Why the panel ``title`` cannot be drawn for ``study``, or None if it can."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return "the study has no trials"
    if title == "Intermediate values":
        shown = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        if not any(t.intermediate_values for t in trials if t.state in shown):
            return "no completed or running trial reported per-epoch values"
        return None
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        counts = pd.Series([t.state.name.lower() for t in trials]).value_counts()
        return "no completed trials (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
    if title == "Parallel coordinates" and not any(t.params for t in done):
        return "completed trials carry no search-space parameters"
    if title == "Hyperparameter importance":
        if len(done) < 3:
            return f"importance needs at least 3 completed trials, the study has {len(done)}"
        if len(_varying_params(done)) < 2:
            return "fewer than 2 parameters vary across completed trials"
        if len({t.value for t in done}) < 2:
            return "every completed trial has the same value"
    return None


def _varying_params(done: list) -> list[str]:
    """Parameter names that take more than one value across the given trials."""
    seen: dict[str, set] = {}
    for t in done:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(repr(v))
    return sorted(k for k, vals in seen.items() if len(vals) > 1)


def _draw_panel(study: optuna.Study, title: str, path: str) -> None:
    """Draw one Optuna matplotlib panel and save it atomically to ``path``."""
    vis = optuna.visualization.matplotlib
    fn = getattr(vis, _PANELS[title][1])
    kwargs: dict[str, Any] = {}
    if title == "Hyperparameter importance":
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        kwargs = {"evaluator": _importance_evaluator(), "params": _varying_params(done)}
    before = set(plt.get_fignums())
    try:
        with _quiet(), plt.rc_context():
            ax = fn(study, **kwargs)
            first = np.ravel(ax)[0]
            fig = first.figure
            fig.set_size_inches(12 if title == "Parallel coordinates" else 9, 5.5)
            if title == "Intermediate values":
                first.set_xlabel("epoch")
                if len(study.trials) > 12 and first.get_legend() is not None:
                    first.get_legend().remove()
            _save_atomic(fig, path)
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def draw_hpo_plots(study: optuna.Study, out_dir: str) -> dict[str, str]:
    """Save Optuna's importance, parallel, history and intermediate-value panels as PNGs.

    Returns ``{title: file name in out_dir}`` for drawn panels and
    ``{title: "not drawn: <reason>"}`` for the others; a stale PNG of an undrawn panel is removed.
    """
    os.makedirs(out_dir, exist_ok=True)
    out: dict[str, str] = {}
    for title, (name, _) in _PANELS.items():
        path = os.path.join(out_dir, name)
        reason = _why_not(study, title)
        if reason is None:
            try:
                _draw_panel(study, title, path)
                out[title] = name
                continue
            except Exception as exc:  # an optuna/matplotlib corner case must not kill the report
                reason = _one_line(exc)
        out[title] = f"not drawn: {reason}"
        if os.path.exists(path):
            os.unlink(path)
    return out


# ----------------------------------------------------------------------------- seen vs novel
def _non_dominated(seen: np.ndarray, novel: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats (>= on both axes, > on one); O(n log n)."""
    order = np.lexsort((-novel, -seen))  # seen descending, then novel descending
    mask = np.zeros(len(seen), dtype=bool)
    best_above, i = -np.inf, 0
    while i < len(order):
        j = i
        while j < len(order) and seen[order[j]] == seen[order[i]]:
            j += 1
        top = novel[order[i]]  # the best novel accuracy at this seen accuracy
        for p in order[i:j]:
            mask[p] = novel[p] == top and novel[p] > best_above
        best_above, i = max(best_above, top), j
    return mask


def pareto_front(thresholds: pd.DataFrame, level: str) -> pd.DataFrame:
    """Operating points of each trial's final epoch on the (seen, novel) ``level`` accuracy plane.

    Adds ``pareto`` (not dominated) and ``front_rank`` (1..k along the front by increasing seen
    accuracy, NaN off the front). Rows whose seen or novel accuracy is NaN are dropped.
    """
    if level not in _LEVELS:
        raise ValueError(f"level must be 'super' or 'sub', not {level!r}")
    seen_c, novel_c = f"seen_{level}_acc", f"novel_{level}_acc"
    cols = list(dict.fromkeys([*thresholds.columns, "pareto", "front_rank"]))
    if thresholds.empty or not {"trial_id", seen_c, novel_c} <= set(thresholds.columns):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df = thresholds
    if "epoch" in df.columns:
        df = df[df["epoch"] == df.groupby("trial_id")["epoch"].transform("max")]
    seen = pd.to_numeric(df[seen_c], errors="coerce")
    novel = pd.to_numeric(df[novel_c], errors="coerce")
    df = df[np.isfinite(seen) & np.isfinite(novel)].reset_index(drop=True)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    s = pd.to_numeric(df[seen_c]).to_numpy(float)
    n = pd.to_numeric(df[novel_c]).to_numpy(float)
    df["pareto"] = _non_dominated(s, n)
    df["front_rank"] = np.nan
    front = np.flatnonzero(df["pareto"].to_numpy())
    front = front[np.lexsort((front, -n[front], s[front]))]  # seen up; stable among ties
    df.loc[front, "front_rank"] = np.arange(1, len(front) + 1, dtype=float)
    return df[cols]


def _chosen_row(thresholds: pd.DataFrame, chosen: dict | None) -> pd.Series | None:
    """The thresholds row of the chosen operating point (its epoch, else the trial's last)."""
    if not chosen or thresholds.empty or "trial_id" not in thresholds.columns:
        return None
    rows = thresholds[thresholds["trial_id"].astype(str) == str(chosen.get("trial_id"))]
    for key in ("score", "threshold"):
        if key in chosen and key in rows.columns:
            rows = rows[[_same(v, chosen[key]) for v in rows[key]]]
    if "epoch" in rows.columns and len(rows):
        epoch = chosen.get("epoch", rows["epoch"].max())
        rows = rows[rows["epoch"] == epoch]
    return rows.iloc[0] if len(rows) else None


def _no_points_reason(thresholds: pd.DataFrame, level: str) -> str:
    """One line saying why a level has no (seen, novel) point."""
    col = f"novel_{level}_acc"
    if thresholds.empty or col not in thresholds.columns:
        return "no threshold sweep results recorded"
    if pd.to_numeric(thresholds[col], errors="coerce").notna().any():
        return f"no finite seen/novel {_LEVELS[level]} accuracy at the trials' final epochs"
    return f"validation holds no novel {_LEVELS[level]} images"


def _draw_level(ax: Any, thresholds: pd.DataFrame, chosen: dict | None, level: str) -> bool:
    """Fill one panel; returns False (after writing the reason in it) if it has no point."""
    name = _LEVELS[level]
    ax.set_title(name.capitalize())
    pts = pareto_front(thresholds, level)
    if pts.empty:
        ax.text(0.5, 0.5, _no_points_reason(thresholds, level), ha="center", va="center",
                transform=ax.transAxes, wrap=True)
        ax.set_xticks([]), ax.set_yticks([])
        return False
    seen_c, novel_c = f"seen_{level}_acc", f"novel_{level}_acc"
    ax.scatter(pts[seen_c], pts[novel_c], s=14, c="0.7", label=f"{len(pts)} operating points")
    front = pts[pts["pareto"]].sort_values("front_rank")
    ax.plot(front[seen_c], front[novel_c], "-o", c="C0", ms=4, label="Pareto front")
    row = _chosen_row(thresholds, chosen)
    if row is not None and None not in (_finite(row.get(seen_c)), _finite(row.get(novel_c))):
        x, y = float(row[seen_c]), float(row[novel_c])
        ax.scatter([x], [y], marker="*", s=260, c="C3", zorder=5, label="chosen")
        ax.annotate(f"{row.get('score', '')} @ {row.get('threshold', '')}\n{row['trial_id']}",
                    (x, y), xytext=(8, -18), textcoords="offset points", fontsize=8)
    elif chosen:
        ax.text(0.02, 0.02, "chosen point has no novel accuracy here", transform=ax.transAxes,
                fontsize=8)
    ax.set(xlabel=f"seen {name} accuracy", ylabel=f"novel {name} accuracy",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return True


def plot_seen_vs_novel(thresholds: pd.DataFrame, chosen: dict | None, path: str) -> str | None:
    """Seen vs novel accuracy of every final-epoch operating point, superclass and subclass.

    Greys are all points, the line is the Pareto front, the star is ``chosen`` (trial_id, score,
    threshold). Returns None once the PNG is written, or a reason when neither level has a point
    (then no file is written).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    try:
        drawn = [_draw_level(ax, thresholds, chosen, lv) for ax, lv in zip(axes, _LEVELS)]
        if not any(drawn):
            return "; ".join(f"{_LEVELS[lv]}: {_no_points_reason(thresholds, lv)}"
                             for lv in _LEVELS)
        fig.suptitle("Seen vs novel accuracy (final epoch of each trial)")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _save_atomic(fig, path)
        return None
    finally:
        plt.close(fig)
