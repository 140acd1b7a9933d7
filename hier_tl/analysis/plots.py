"""The report's own figures: learning curves of each variant's best trial, the seen/novel trade-off across
thresholds, and the trials kept at each epoch. Accuracies in %, epochs on integer axes, trials named by their
trial id as in the table, PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.config import Threshold
from ..core.fileio import atomic_path

LEVEL_NAMES = {"super": "superclass", "sub": "subclass"}


def figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def integer_axis(axis) -> None:
    """Ticks at whole numbers only (epochs, trial counts, rungs)."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def percent_axis(axis) -> None:
    from matplotlib.ticker import PercentFormatter
    axis.set_major_formatter(PercentFormatter(decimals=0))


def save(fig, path: Path) -> None:
    """Atomic PNG: a full disk leaves no 0-byte file behind."""
    plt = figure()
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)


def label(row) -> str:
    """How a variant's best trial is named in legends: `resnet18/partial (a1b2c_00003)`."""
    return f"{row.backbone}/{row.depth} ({row.best_trial})"


def calibrated_note(threshold: str, level: str) -> str:
    """Why a seen-accuracy curve is flat: a `tpr:P` rule keeps a fraction P of seen validation images."""
    try:
        rule = Threshold.per_level(threshold)[level]
    except Exception:  # noqa: BLE001 - an unparsable recorded rule: no note
        return ""
    return f"\ncalibrated: tpr:{rule.value:g} keeps ~{rule.value:.0%} of seen images as seen" if rule.kind == "tpr" \
        else ""


def plot_curves(epochs: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """The paper's Figure 1: train/val loss and seen accuracy per epoch, one line per variant's best trial."""
    fig, axes = figure().subplots(2, 2, figsize=(12, 7.5))
    thresholds = set(table.get("threshold", pd.Series(dtype=str)).astype(str))
    panels = [("train_loss", "training loss", ""), ("val_loss", "validation loss (seen images)", ""),
              ("seen_super_acc", "seen superclass accuracy", "super"), ("seen_sub_acc", "seen subclass accuracy", "sub")]
    for ax, (col, title, level) in zip(axes.flat, panels):
        for row in table.itertuples():
            e = epochs[epochs.trial_id == row.best_trial].sort_values("epoch")
            if col in e:
                ax.plot(e.epoch, e[col] * (100 if level else 1), marker="o", ms=3, label=label(row))
        note = calibrated_note(next(iter(thresholds)), level) if level and len(thresholds) == 1 else ""
        ax.set_title(title + note, fontsize=10)
        ax.set_xlabel("epoch")
        integer_axis(ax.xaxis)
        if level:
            percent_axis(ax.yaxis)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    save(fig, path)


def plot_tradeoff(thresholds: pd.DataFrame, trials: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """Seen versus novel accuracy across thresholds (final epoch of each variant's best trial, its own
    score), points joined in threshold order and labelled with their threshold; a level without novel
    validation images says so instead of drawing empty axes."""
    fig, axes = figure().subplots(1, 2, figsize=(12, 5))
    for ax, (lvl, name) in zip(axes, LEVEL_NAMES.items()):
        drawn = False
        for row in table.itertuples():
            t = trials[trials.trial_id == row.best_trial].iloc[0]
            th = thresholds[(thresholds.trial_id == row.best_trial) & (thresholds.epoch == t.epochs_run)
                            & (thresholds.score == t.novelty_score)].dropna(subset=[f"novel_{lvl}_acc"])
            th = th.sort_values(f"threshold_{lvl}")
            if th.empty:
                continue
            drawn = True
            ax.plot(100 * th[f"seen_{lvl}_acc"], 100 * th[f"novel_{lvl}_acc"], marker="o", ms=4,
                    label=f"{label(row)}, {t.novelty_score}")
            for r in th.itertuples():
                ax.annotate(str(r.threshold), (100 * getattr(r, f"seen_{lvl}_acc"), 100 * getattr(r, f"novel_{lvl}_acc")),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        if drawn:
            ax.set(xlabel=f"seen {name} accuracy", ylabel=f"novel {name} accuracy", title=f"{name}: one point per threshold")
            percent_axis(ax.xaxis)
            percent_axis(ax.yaxis)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{name}: validation holds no novel {name} images\n(nothing to trade off)",
                    ha="center", va="center", fontsize=10)
    save(fig, path)


def plot_rungs(trials: pd.DataFrame, path: Path) -> None:
    """How many trials reached each epoch (ASHA's rungs show as steps)."""
    top = int(trials.epochs_run.max() or 0)
    xs = list(range(1, top + 1))
    fig, ax = figure().subplots(figsize=(7, 3.8))
    ax.bar(xs, [int((trials.epochs_run >= e).sum()) for e in xs], color="#4c72b0")
    ax.set(xlabel="epoch", ylabel="trials that reached it", title="trials kept at each epoch (ASHA's rungs)")
    integer_axis(ax.xaxis)
    integer_axis(ax.yaxis)
    save(fig, path)
