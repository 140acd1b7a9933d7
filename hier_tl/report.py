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
    """One row per backbone x depth: its best trial by the sweep objective (at the trial's final epoch, which
    is what its checkpoint holds), plus how many trials ran, were stopped early or errored, and compute."""
    df = trials.copy()
    key = f"final_{metric}"  # the final epoch: what the trial's checkpoint (and predict) delivers
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


def sweep_state(trials: pd.DataFrame) -> str:
    """'finished', or a sentence saying the sweep is still running / was interrupted."""
    live = trials.status.isin(["running", "pending"]).sum()
    stopped = (trials.status == "interrupted").sum()
    if live:
        return f"still running: {live} trial(s) in progress; numbers are as of now"
    if stopped:
        return f"interrupted: {stopped} trial(s) did not finish (resume with `hier-tl sweep ... --resume`)"
    return "finished"


def plot_curves(epochs: pd.DataFrame, table: pd.DataFrame, path) -> None:
    """The paper's Figure 1: train/val loss and seen accuracy per epoch, one line per variant's best trial."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panels = [("train_loss", "train loss"), ("val_loss", "validation loss"),
              ("seen_super_acc", "seen superclass accuracy"), ("seen_sub_acc", "seen subclass accuracy")]
    for ax, (col, title) in zip(axes.flat, panels):
        for row in table.itertuples():
            e = epochs[epochs.trial_id == row.best_trial].sort_values("epoch")
            ax.plot(e.epoch, e[col], marker="o", ms=3, label=f"{row.backbone}/{row.depth}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_tradeoff(thresholds: pd.DataFrame, trials: pd.DataFrame, table: pd.DataFrame, path) -> None:
    """Seen versus novel accuracy across thresholds (final epoch of each variant's best trial, its own score)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for row in table.itertuples():
        t = trials[trials.trial_id == row.best_trial].iloc[0]
        th = thresholds[(thresholds.trial_id == row.best_trial) & (thresholds.epoch == t.epochs_run)
                        & (thresholds.score == t.novelty_score)]
        for ax, lvl in zip(axes, ("super", "sub")):
            ax.plot(th[f"seen_{lvl}_acc"], th[f"novel_{lvl}_acc"], marker="o", ms=4,
                    label=f"{row.backbone}/{row.depth} ({t.novelty_score})")
    for ax, name in zip(axes, ("superclass", "subclass")):
        ax.set_xlabel(f"seen {name} accuracy")
        ax.set_ylabel(f"novel {name} accuracy")
        ax.set_title(f"{name}: one point per threshold")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_rungs(trials: pd.DataFrame, path) -> None:
    """How many trials reached each epoch (ASHA's rungs show as steps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = int(trials.epochs_run.max() or 0)
    xs = list(range(1, top + 1))
    ys = [int((trials.epochs_run >= e).sum()) for e in xs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(xs, ys, color="#4c72b0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("trials still running")
    ax.set_title("trials kept at each epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results_dir, out_dir=None) -> tuple[pd.DataFrame, str]:
    """report.md, self-contained report.html and PNG plots; returns (table, state)."""
    import base64
    from pathlib import Path

    import yaml

    d = Path(results_dir)
    out = Path(out_dir) if out_dir else d
    out.mkdir(parents=True, exist_ok=True)
    trials = pd.read_parquet(d / "trials.parquet")
    epochs = pd.read_parquet(d / "epochs.parquet") if (d / "epochs.parquet").exists() else pd.DataFrame()
    thresholds = pd.read_parquet(d / "thresholds.parquet") if (d / "thresholds.parquet").exists() else pd.DataFrame()
    meta = yaml.safe_load((d / "sweep.yaml").read_text()) if (d / "sweep.yaml").exists() else {}
    sched = meta.get("scheduler", {})
    metric, mode = sched.get("metric", "objective"), sched.get("mode", "max")
    table = comparison_table(trials, metric, mode)  # variants whose every trial errored show as "-" rows
    state = sweep_state(trials)
    plots = {}
    if len(table) and len(epochs):
        t = table.rename(columns={"best trial": "best_trial"})
        plot_curves(epochs, t, out / "curves.png")
        plots["Learning curves (best trial of each variant)"] = "curves.png"
        if len(thresholds):
            plot_tradeoff(thresholds, trials, t, out / "tradeoff.png")
            plots["Seen vs novel accuracy across thresholds"] = "tradeoff.png"
        plot_rungs(trials[trials.epochs_run > 0], out / "rungs.png")
        plots["Trials kept at each epoch (ASHA rungs)"] = "rungs.png"
    head = (f"# Sweep report: {meta.get('name', d.name)}\n\nState: **{state}**. {len(trials)} trials; objective "
            f"`{metric}` ({mode}); rows are the best trial of each backbone x depth, at its final epoch.\n")
    md = head + "\n" + _markdown(table) + "\n" + "".join(f"\n## {k}\n\n![{k}]({v})\n" for k, v in plots.items())
    (out / "report.md").write_text(md)
    imgs = "".join(f"<h2>{k}</h2><img src='data:image/png;base64,{base64.b64encode((out / v).read_bytes()).decode()}'>"
                   for k, v in plots.items())
    html = (f"<!doctype html><meta charset='utf-8'><title>hier-tl report</title><style>body{{font-family:sans-serif;"
            f"margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}</style>"
            f"<h1>Sweep report: {meta.get('name', d.name)}</h1><p>State: <b>{state}</b>. {len(trials)} trials.</p>"
            + table.to_html(index=False, na_rep="-") + imgs)
    (out / "report.html").write_text(html)
    return table, state


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_No trial has reported yet._\n"
    cols = list(table.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        rows.append("| " + " | ".join("-" if pd.isna(r[c]) else str(r[c]) for c in cols) + " |")
    return "\n".join(rows) + "\n"
