"""The seen-vs-novel trade-off: every final-epoch operating point (trial x score x threshold) on the
(seen, novel) accuracy plane of each level, and its Pareto front."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from ..core.numbers import finite as _finite
from ..sweep.studies import same as _same
from .hpo import _save_atomic, plt

_LEVELS = {"super": "superclass", "sub": "subclass"}


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
    ax.scatter(100 * pts[seen_c], 100 * pts[novel_c], s=14, c="0.7", label=f"{len(pts)} operating points")
    front = pts[pts["pareto"]].sort_values("front_rank")
    ax.plot(100 * front[seen_c], 100 * front[novel_c], "-o", c="C0", ms=4, label="Pareto front")
    row = _chosen_row(thresholds, chosen)
    if row is not None and None not in (_finite(row.get(seen_c)), _finite(row.get(novel_c))):
        x, y = 100 * float(row[seen_c]), 100 * float(row[novel_c])
        ax.scatter([x], [y], marker="*", s=260, c="C3", zorder=5, label="chosen")
        right, low = x > 50, y < 50  # the label goes towards the middle: it stays inside the panel
        ax.annotate(f"{row.get('score', '')}\n@ {row.get('threshold', '')}\n{row['trial_id']}", (x, y),
                    xytext=(-10 if right else 10, 10 if low else -10), textcoords="offset points", fontsize=8,
                    ha="right" if right else "left", va="bottom" if low else "top",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    elif chosen:
        ax.text(0.02, 0.02, "chosen point has no novel accuracy here", transform=ax.transAxes,
                fontsize=8)
    ax.set(xlabel=f"seen {name} accuracy", ylabel=f"novel {name} accuracy",
           xlim=(-2, 102), ylim=(-2, 102))
    from matplotlib.ticker import PercentFormatter
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
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
