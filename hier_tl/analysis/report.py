"""Turn a sweep's Parquet files into the comparison the seed paper made by hand (Table 1, Figure 1), one block
per validation protocol (objectives of different protocols are not comparable: `results.protocols`), with
the standard HPO panels (Optuna's, from a study rebuilt from the tables) and the seen-vs-novel trade-off with
its Pareto front, under a header that says what was run: commit, date, sweep file, dataset, machine, command."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..core.fileio import write_text
from ..results.protocols import decision, ordered, protocol_column, within
from ..results.reading import Results, best_trial, load_results
from ..train.registries import EPOCH_METRICS
from . import report_pages
from .plots import plot_curves, plot_rungs, plot_tradeoff
from .unseen import gaps, verdict

VARIANT = ["backbone", "depth"]
PERCENT = ("objective", "seen super", "seen sub", "novel super", "novel sub", "new breeds",
           "new breeds as novel super")


def table_columns() -> dict[str, str]:
    """Column in the table <- column in trials.parquet; registered epoch metrics with a `label` join in."""
    cols = {"seen super": "final_seen_super_acc", "seen sub": "final_seen_sub_acc",
            "novel super": "final_novel_super_acc", "novel sub": "final_novel_sub_acc",
            "new breeds": "final_novel_sub_seen_super_acc", "AUROC sub": "auroc_sub", "lr": "lr",
            "mixup": "mixup_alpha", "score": "novelty_score", "threshold": "threshold", "epochs": "epochs_run"}
    for name in EPOCH_METRICS.names():
        if EPOCH_METRICS.meta(name).get("label"):
            cols[EPOCH_METRICS.meta(name)["label"]] = f"final_{name}"
    return cols


def comparison_table(trials: pd.DataFrame, metric: str = "objective", mode: str = "max",
                     decide: str | None = None) -> pd.DataFrame:
    """One row per protocol x backbone x depth: its best trial (the one best-trial rule: final-epoch `metric`,
    what the trial's checkpoint delivers), how many trials ran, were stopped early or errored, and compute.
    Rows are ranked only against rows of the same protocol; `P1` (the deciding protocol, when there is one)
    comes first."""
    if trials.empty:
        return pd.DataFrame()
    df = trials.assign(protocol=protocol_column(trials))
    score_col = df.get("novelty_score", pd.Series("msp", index=df.index))
    df["auroc_sub"] = [r.get(f"final_auroc_sub_{s}") for (_, r), s in zip(df.iterrows(), score_col)]
    blocks = []
    for i, p in enumerate(ordered(df, decide), 1):
        rows = [_row(g, bb, depth, metric, mode) for (bb, depth), g in within(df, p).groupby(VARIANT, sort=False)]
        block = pd.DataFrame(rows).sort_values(metric, ascending=(mode == "min"), na_position="last")
        blocks.append(block.assign(P=f"P{i}", protocol=p, decides=(p == decide)))
    out = pd.concat(blocks, ignore_index=True)
    return out[["P", "protocol", "decides", *[c for c in out.columns if c not in ("P", "protocol", "decides")]]]


def _row(g: pd.DataFrame, bb, depth, metric: str, mode: str) -> dict:
    best = best_trial(g, metric, mode)
    best = g.iloc[0] if best is None else best
    row = {"backbone": bb, "depth": depth, metric: best.get(f"final_{metric}")}
    if f"final_{metric}_std" in g:  # rotating validation: the spread of the objective over folds
        row["fold spread"] = best.get(f"final_{metric}_std")
    row.update({name: best.get(col) for name, col in table_columns().items()})
    row.update({"trials": len(g), "stopped early": int((g.status == "stopped").sum()),
                "errored": int((g.status == "errored").sum()), "compute s": float(g.compute_s.sum()),
                "best trial": best["trial_id"]})
    return row


def cell(col: str, v) -> str:
    """One table cell as people read it (terminal, markdown and HTML alike): accuracies in %."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if col in PERCENT:
        return f"{100 * v:.1f}%"
    if col == "fold spread":
        return f"±{100 * v:.1f} pts"
    if col == "lr":
        return f"{v:.1e}"
    if col == "decides":
        return "yes" if v else ""
    if col.endswith(" s") or col in (lab for n in EPOCH_METRICS.names() if (lab := EPOCH_METRICS.meta(n).get("label"))):
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal: one block per protocol, its label as the block's heading."""
    if table.empty:
        return "(no trial has reported an epoch yet)"
    blocks = []
    for (p, label, decides), block in table.groupby(["P", "protocol", "decides"], sort=False):
        cols = [c for c in block.columns if c not in ("P", "protocol", "decides")]
        cells = [[cell(c, r[c]) for c in cols] for _, r in block.iterrows()]
        widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
        head = f"{p}: validation protocol '{label}'" + (" (decides: best / predict rank these)" if decides else "")
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        blocks.append("\n".join(lines + ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]))
    return "\n\n".join(blocks)


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


def deciding(res: Results) -> str | None:
    """The protocol that decides, or None when the sweep spans several and names none."""
    try:
        return decision(res.trials, res.meta) if len(res.trials) else None
    except Exception:  # noqa: BLE001 - ambiguous: the report shows every protocol, none marked
        return None


def write_report(uri: str, out_dir: str | None = None, command: str = "", unseen: dict[str, float] | None = None,
                 ensemble: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str, Path]:
    """report.md, a self-contained report.html and the PNGs; returns (table, state, folder written).
    `unseen` (table column -> fraction, `unseen.parse_unseen`): figures measured on images of unseen classes,
    which the report sets beside each protocol's validation estimate; `ensemble`: what the best trials
    score together on validation (`predict.ensemble.validate_ensemble`)."""
    res = load_results(uri)
    out = Path(out_dir) if out_dir else (Path(uri) if res.storage.is_local else Path(f"{res.storage.name}-report"))
    decide = deciding(res)
    table, state = comparison_table(res.trials, res.metric, res.mode, decide), sweep_state(res.trials)
    if len(table):
        table = report_pages.front_columns(table, res)
    sections = _sections(res, table, decide, out)
    page = report_pages.Page(res, table, state, sections, command, ensemble=ensemble)
    if unseen and len(table):
        page.unseen = gaps(table, unseen)
        page.unseen_note = verdict(page.unseen, decide)
    write_text(out / "report.md", page.markdown())
    write_text(out / "report.html", page.html(out))
    if res.storage.is_local and out.resolve() != Path(res.storage.exp).resolve() and res.meta:
        write_text(out / "sweep.yaml", res.storage.read_text("sweep.yaml"))  # a report elsewhere says what it shows
    return table, state, out


def _sections(res: Results, table: pd.DataFrame, decide: str | None, out: Path) -> list[tuple[str, dict]]:
    """(heading, {panel title: PNG name or 'not drawn: why'}) for each protocol block, then the whole sweep."""
    if table.empty or res.epochs.empty:
        return [("Plots", {"Plots": "not drawn: no trial has reported an epoch yet"})]
    sections = [(f"{p}: {label}", report_pages.protocol_panels(res, p, label, decide, out))
                for p, label in dict(zip(table.P, table.protocol)).items()]
    t = table.rename(columns={"best trial": "best_trial"})
    whole = {}
    plot_curves(res.epochs, t, out / "curves.png")
    whole["Learning curves (best trial of each row of the table)"] = "curves.png"
    if len(res.thresholds):
        plot_tradeoff(res.thresholds, res.trials, t, out / "tradeoff.png")
        whole["Seen vs novel accuracy across thresholds (best trial of each row)"] = "tradeoff.png"
    if (res.meta.get("scheduler") or {}).get("kind", "asha") == "asha":
        plot_rungs(res.trials[res.trials.epochs_run > 0], out / "rungs.png")
        whole["Trials kept at each epoch (ASHA rungs)"] = "rungs.png"
    else:
        whole["Trials kept at each epoch (ASHA rungs)"] = "not drawn: this sweep ran without early stopping " \
            "(scheduler: none), so every trial ran all its epochs"
    return sections + [("The whole sweep", whole)]
