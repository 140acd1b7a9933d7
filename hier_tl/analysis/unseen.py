"""How far each validation protocol's estimate is from accuracies measured on unseen images.

Validation can only hold out classes of the training set; images of classes nobody tuned on (measured
outside the sweep: a later test set, a leaderboard) tell how optimistic each protocol was. Given those
measurements (`hier-tl report ... --unseen novel_super=86.6 seen_super=91.4`, in %), the report lists, per
protocol, its best trial's validation figure beside the measured one and the difference in points
(positive: validation overstated), and names the protocol whose estimate came closest: among the protocols
that estimate the most of the measured figures, the one with the smallest mean absolute difference.
"""

from __future__ import annotations

import math

import pandas as pd

from ..core.errors import ConfigError

# the name on the command line -> the comparison table's column (both in %)
MEASURES = {"seen_super": "seen super", "novel_super": "novel super", "seen_sub": "seen sub",
            "novel_sub": "novel sub", "new_breeds": "new breeds"}


def parse_unseen(items: list[str]) -> dict[str, float]:
    """`["novel_super=86.6", ...]` -> {"novel super": 0.866}; ConfigError naming the item otherwise."""
    got: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in MEASURES:
            raise ConfigError(f"--unseen {item!r}: expected NAME=PERCENT with NAME one of {', '.join(MEASURES)}")
        try:
            value = float(text.rstrip("%"))
        except ValueError:
            value = math.nan
        if not 0 <= value <= 100:  # NaN fails this too
            raise ConfigError(f"--unseen {item!r}: {text!r} is not a percentage from 0 to 100")
        got[MEASURES[key]] = value / 100
    return got


def gaps(table: pd.DataFrame, unseen: dict[str, float]) -> pd.DataFrame:
    """One row per protocol x measured figure: its best trial's validation value, the measured one, and
    `overstated by` (points); protocols in the table's order (P1 first)."""
    rows = []
    for p, block in table.groupby("P", sort=False):
        best = block.iloc[0]  # blocks are ranked: the protocol's best trial comes first
        for col, measured in unseen.items():
            v = best.get(col)
            v = float(v) if v is not None and pd.notna(v) else math.nan
            rows.append({"P": p, "protocol": best["protocol"], "figure": col, "validation": v,
                         "unseen": measured, "overstated by": (v - measured) * 100})
    return pd.DataFrame(rows)


def closest(g: pd.DataFrame) -> tuple[str, float, int] | None:
    """(P, mean absolute difference in points, figures estimated) of the protocol whose estimate came
    closest; None when no protocol estimates any measured figure."""
    est = g.dropna(subset=["overstated by"]).assign(abs=lambda d: d["overstated by"].abs())
    if est.empty:
        return None
    per = est.groupby("P", sort=False).agg(n=("abs", "size"), mean=("abs", "mean"))
    per = per[per.n == per.n.max()].sort_values("mean", kind="stable")
    return per.index[0], float(per["mean"].iloc[0]), int(per["n"].iloc[0])


def verdict(g: pd.DataFrame, decide: str | None) -> str:
    """One sentence under the table: the closest protocol, and whether the sweep decides on it."""
    best = closest(g)
    if best is None:
        return "No protocol of this sweep estimates any of the measured figures."
    p, mean, n = best
    label = g[g.P == p].protocol.iloc[0]
    text = (f"Closest to the unseen measurement: {p} ({label}), {mean:.1f} points off on average over the "
            f"{n} figure(s) it estimates.")
    if decide is not None and label != decide:
        text += f" The sweep decides on '{decide}': consider `decide_on` naming {p}'s protocol."
    return text


def cells(g: pd.DataFrame) -> list[list[str]]:
    """The header, then one formatted row per protocol x figure (for report.md and report.html alike)."""
    head = ["P", "protocol", "figure", "validation", "unseen", "overstated by"]
    return [head] + [[r.P, r.protocol, r.figure, _pct(r.validation), _pct(r.unseen), _points(r[5])]
                     for r in g.itertuples(index=False)]


def markdown_table(g: pd.DataFrame) -> list[str]:
    head, *body = cells(g)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v * 100:.1f}%"


def _points(v: float) -> str:
    return "- (not estimated)" if math.isnan(v) else f"{v:+.1f} points"
