"""Turn a sweep's Parquet files into the comparison the seed paper made by hand (Table 1, Figure 1)."""

from __future__ import annotations

import math

import pandas as pd

VARIANT = ["backbone", "depth"]
TABLE_COLUMNS = {  # column in the table <- column in trials.parquet
    "seen super": "final_seen_super_acc", "seen sub": "final_seen_sub_acc",
    "novel super": "final_novel_super_acc", "novel sub": "final_novel_sub_acc",
    "AUROC sub": "auroc_sub", "lr": "lr", "mixup": "mixup_alpha", "score": "novelty_score",
    "threshold": "threshold", "epochs": "epochs_run",
}


def comparison_table(trials: pd.DataFrame, metric: str = "objective", mode: str = "max") -> pd.DataFrame:
    """One row per backbone x depth: its best trial by the sweep objective, plus trial counts and compute."""
    df = trials.copy()
    key = f"best_{metric}" if f"best_{metric}" in df else f"final_{metric}"
    score_col = df.get("novelty_score", pd.Series("msp", index=df.index))
    df["auroc_sub"] = [r.get(f"final_auroc_sub_{s}") for (_, r), s in zip(df.iterrows(), score_col)]
    rows = []
    for (bb, depth), g in df.groupby(VARIANT, sort=False):
        scored = g[g[key].notna()]
        best = scored.loc[scored[key].idxmax() if mode == "max" else scored[key].idxmin()] if len(scored) else g.iloc[0]
        row = {"backbone": bb, "depth": depth, metric: best.get(key)}
        row.update({name: best.get(col) for name, col in TABLE_COLUMNS.items()})
        row.update({"trials": len(g), "stopped early": int((g.status == "stopped").sum()),
                    "errored": int((g.status == "errored").sum()), "compute s": float(g.compute_s.sum()),
                    "best trial": best["trial_id"]})
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    return out


def format_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal (accuracies as percentages)."""
    def fmt(col, v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if col in ("seen super", "seen sub", "novel super", "novel sub"):
            return f"{100 * v:.1f}%"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cols = list(table.columns)
    cells = [[fmt(c, r[c]) for c in cols] for _, r in table.iterrows()]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
