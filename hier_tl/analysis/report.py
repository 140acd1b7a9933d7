"""Turn a sweep's Parquet files into the comparison the seed paper made by hand (Table 1, Figure 1), plus
the standard HPO panels (Optuna's, from a study rebuilt from the tables) and the seen-vs-novel trade-off
across every trial, score and threshold with its Pareto front."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from ..core.fileio import atomic_path, write_text
from ..results.reading import Results, best_trial, load_results
from ..train.registries import EPOCH_METRICS

VARIANT = ["backbone", "depth"]
PERCENT = ("seen super", "seen sub", "novel super", "novel sub")


def table_columns() -> dict[str, str]:
    """Column in the table <- column in trials.parquet; registered epoch metrics with a `label` join in."""
    cols = {"seen super": "final_seen_super_acc", "seen sub": "final_seen_sub_acc",
            "novel super": "final_novel_super_acc", "novel sub": "final_novel_sub_acc",
            "AUROC sub": "auroc_sub", "lr": "lr", "mixup": "mixup_alpha", "score": "novelty_score",
            "threshold": "threshold", "epochs": "epochs_run"}
    for name in EPOCH_METRICS.names():
        if EPOCH_METRICS.meta(name).get("label"):
            cols[EPOCH_METRICS.meta(name)["label"]] = f"final_{name}"
    return cols


def comparison_table(trials: pd.DataFrame, metric: str = "objective", mode: str = "max") -> pd.DataFrame:
    """One row per backbone x depth: its best trial (the one best-trial rule: final-epoch `metric`, what the
    trial's checkpoint delivers), plus how many trials ran, were stopped early or errored, and compute."""
    if trials.empty:
        return pd.DataFrame()
    df = trials.copy()
    score_col = df.get("novelty_score", pd.Series("msp", index=df.index))
    df["auroc_sub"] = [r.get(f"final_auroc_sub_{s}") for (_, r), s in zip(df.iterrows(), score_col)]
    rows = []
    for (bb, depth), g in df.groupby(VARIANT, sort=False):
        best = best_trial(g, metric, mode)
        best = g.iloc[0] if best is None else best
        row = {"backbone": bb, "depth": depth, metric: best.get(f"final_{metric}")}
        if f"final_{metric}_std" in g:  # rotating validation: the spread of the objective over folds
            row["fold spread"] = best.get(f"final_{metric}_std")
        row.update({name: best.get(col) for name, col in table_columns().items()})
        row.update({"trials": len(g), "stopped early": int((g.status == "stopped").sum()),
                    "errored": int((g.status == "errored").sum()), "compute s": float(g.compute_s.sum()),
                    "best trial": best["trial_id"]})
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)


def cell(col: str, v) -> str:
    """One table cell as people read it (terminal, markdown and HTML alike)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if col in PERCENT:
        return f"{100 * v:.1f}%"
    if col == "fold spread":
        return f"±{v:.3f}"
    if col == "lr":
        return f"{v:.1e}"
    if col.endswith(" s") or col in (lab for n in EPOCH_METRICS.names() if (lab := EPOCH_METRICS.meta(n).get("label"))):
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    if table.empty:
        return "(no trial has reported an epoch yet)"
    cols = list(table.columns)
    cells = [[cell(c, r[c]) for c in cols] for _, r in table.iterrows()]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    return "\n".join(lines + ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells])


def sweep_state(trials: pd.DataFrame) -> str:
    """'finished', or a sentence saying the sweep is still running / was interrupted / has no epoch yet."""
    if trials.empty or int(trials.epochs_run.max() or 0) == 0:
        return "no trial has reported an epoch yet"
    live = trials.status.isin(["running", "pending"]).sum()
    stopped = (trials.status == "interrupted").sum()
    if live:
        return f"still running: {live} trial(s) in progress; numbers are as of now"
    if stopped:
        return f"interrupted: {stopped} trial(s) did not finish (resume with `hier-tl sweep ... --resume`)"
    return "finished"


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    """Atomic PNG: a full disk leaves no 0-byte file behind."""
    plt = _figure()
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)


def plot_curves(epochs: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """The paper's Figure 1: train/val loss and seen accuracy per epoch, one line per variant's best trial."""
    fig, axes = _figure().subplots(2, 2, figsize=(11, 7))
    panels = [("train_loss", "train loss"), ("val_loss", "validation loss"),
              ("seen_super_acc", "seen superclass accuracy"), ("seen_sub_acc", "seen subclass accuracy")]
    for ax, (col, title) in zip(axes.flat, panels):
        for row in table.itertuples():
            e = epochs[epochs.trial_id == row.best_trial].sort_values("epoch")
            ax.plot(e.epoch, e[col], marker="o", ms=3, label=f"{row.backbone}/{row.depth}")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    _save(fig, path)


def plot_tradeoff(thresholds: pd.DataFrame, trials: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """Seen versus novel accuracy across thresholds (final epoch of each variant's best trial, its own
    score), points joined in threshold order and labelled with their threshold; a level without novel
    validation images says so instead of drawing empty axes."""
    fig, axes = _figure().subplots(1, 2, figsize=(11, 4.5))
    for ax, lvl, name in zip(axes, ("super", "sub"), ("superclass", "subclass")):
        drawn = False
        for row in table.itertuples():
            t = trials[trials.trial_id == row.best_trial].iloc[0]
            th = thresholds[(thresholds.trial_id == row.best_trial) & (thresholds.epoch == t.epochs_run)
                            & (thresholds.score == t.novelty_score)].dropna(subset=[f"novel_{lvl}_acc"])
            th = th.sort_values(f"threshold_{lvl}")
            if th.empty:
                continue
            drawn = True
            ax.plot(th[f"seen_{lvl}_acc"], th[f"novel_{lvl}_acc"], marker="o", ms=4,
                    label=f"{row.backbone}/{row.depth} ({t.novelty_score})")
            for r in th.itertuples():
                ax.annotate(str(r.threshold), (getattr(r, f"seen_{lvl}_acc"), getattr(r, f"novel_{lvl}_acc")),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        if drawn:
            ax.set(xlabel=f"seen {name} accuracy", ylabel=f"novel {name} accuracy",
                   title=f"{name}: one point per threshold")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{name}: validation holds no novel {name} images\n(nothing to trade off)",
                    ha="center", va="center", fontsize=10)
    _save(fig, path)


def plot_rungs(trials: pd.DataFrame, path: Path) -> None:
    """How many trials reached each epoch (ASHA's rungs show as steps)."""
    top = int(trials.epochs_run.max() or 0)
    xs = list(range(1, top + 1))
    fig, ax = _figure().subplots(figsize=(6, 3.5))
    ax.bar(xs, [int((trials.epochs_run >= e).sum()) for e in xs], color="#4c72b0")
    ax.set(xlabel="epoch", ylabel="trials still running", title="trials kept at each epoch")
    _save(fig, path)


def front_columns(table: pd.DataFrame, res: Results) -> pd.DataFrame:
    """Which Pareto-front point (1 = highest seen accuracy) each row's operating point is, per level."""
    from .pareto import pareto_front

    out = table.copy()
    for lvl, col in (("super", "front super"), ("sub", "front sub")):
        front = pareto_front(res.thresholds, lvl) if len(res.thresholds) else pd.DataFrame()
        ranks = {} if front.empty else {(r.trial_id, r.score, str(r.threshold)): r.front_rank
                                        for r in front.itertuples() if r.pareto}
        out[col] = [ranks.get((r["best trial"], r["score"], str(r["threshold"]))) for _, r in out.iterrows()]
    return out


def write_report(uri: str, out_dir: str | None = None) -> tuple[pd.DataFrame, str, Path]:
    """report.md, a self-contained report.html and the PNGs; returns (table, state, folder written)."""
    res = load_results(uri)
    out = Path(out_dir) if out_dir else (Path(uri) if res.storage.is_local else Path(f"{res.storage.name}-report"))
    table, state = comparison_table(res.trials, res.metric, res.mode), sweep_state(res.trials)
    plots = _plots(res, table, out)
    if len(table):
        table = front_columns(table, res)
    name = res.meta.get("name", res.storage.name)
    head = (f"# Sweep report: {name}\n\nState: **{state}**. {len(res.trials)} trials; objective `{res.metric}` "
            f"({res.mode}); each row is the best trial of a backbone x depth by its **final-epoch** `{res.metric}` "
            "(what its checkpoint holds); `front` = its rank on the seen-vs-novel Pareto front.\n")
    md = head + "\n" + _markdown(table) + "".join(
        f"\n## {k}\n\n" + (f"![{k}]({v})\n" if v.endswith(".png") else f"_{v}_\n") for k, v in plots.items())
    write_text(out / "report.md", md)
    write_text(out / "report.html", _html(name, state, len(res.trials), table, plots, out))
    return table, state, out


def _plots(res: Results, table: pd.DataFrame, out: Path) -> dict[str, str]:
    """Draw what the data allows; a plot that cannot be drawn gets one line saying why."""
    from ..sweep.studies import build_study
    from .hpo import draw_hpo_plots
    from .pareto import plot_seen_vs_novel

    if table.empty or res.epochs.empty:
        return {"Plots": "not drawn: no trial has reported an epoch yet"}
    t = table.rename(columns={"best trial": "best_trial"})
    plots = {}
    plot_curves(res.epochs, t, out / "curves.png")
    plots["Learning curves (best trial of each variant)"] = "curves.png"
    if len(res.thresholds):
        plot_tradeoff(res.thresholds, res.trials, t, out / "tradeoff.png")
        plots["Seen vs novel accuracy across thresholds (best trial of each variant)"] = "tradeoff.png"
        best = res.trials[res.trials.trial_id == t.best_trial.iloc[0]].iloc[0]
        chosen = {"trial_id": best.trial_id, "score": best.novelty_score, "threshold": str(best.threshold)}
        why = plot_seen_vs_novel(res.thresholds, chosen, str(out / "pareto.png"))
        plots["Seen vs novel, every trial x score x threshold, with the Pareto front"] = why or "pareto.png"
    plot_rungs(res.trials[res.trials.epochs_run > 0], out / "rungs.png")
    plots["Trials kept at each epoch (ASHA rungs)"] = "rungs.png"
    study = build_study(res.trials, res.epochs, res.meta.get("space") or {}, res.metric, res.mode)
    plots.update(draw_hpo_plots(study, str(out)))
    return plots


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_No trial has reported an epoch yet._\n"
    cols = list(table.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(cell(c, r[c]) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(rows) + "\n"


def _html(name: str, state: str, n: int, table: pd.DataFrame, plots: dict[str, str], out: Path) -> str:
    shown = table.copy()
    for c in shown.columns:
        shown[c] = [cell(c, v) for v in table[c]]
    parts = []
    for k, v in plots.items():
        if v.endswith(".png"):
            data = base64.b64encode((out / v).read_bytes()).decode()
            parts.append(f"<h2>{html.escape(k)}</h2><img src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<h2>{html.escape(k)}</h2><p><i>{html.escape(v)}</i></p>")
    return (f"<!doctype html><meta charset='utf-8'><title>hier-tl report</title><style>body{{font-family:sans-serif;"
            f"margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}</style>"
            f"<h1>Sweep report: {html.escape(str(name))}</h1><p>State: <b>{html.escape(state)}</b>. {n} trials.</p>"
            + (shown.to_html(index=False, na_rep="-", escape=True) if len(shown) else "<p>No trial has reported an "
               "epoch yet.</p>") + "".join(parts))
