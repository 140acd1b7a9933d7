"""The report as pages: its header (what was run, where, by which command), how to read it, one block per
validation protocol (table, Pareto view, Optuna panels), then the figures of the whole sweep; as Markdown and
as one self-contained HTML file readable at 1400 px."""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.version import code_version
from ..results.protocols import protocol_column, within
from ..results.reading import Results
from ..sweep.studies import build_study
from .hpo import draw_hpo_plots
from .pareto import pareto_front, plot_seen_vs_novel
from .unseen import cells, markdown_table

HOW_TO_READ = [
    ("objective", "the mean of the seen and novel accuracies, at both levels, that exist on the validation set: "
     "3 terms when no superclass is held out, 4 when one is. It is comparable only between trials of the same "
     "validation protocol, so each protocol has its own block."),
    ("protocol", "how the trial was validated: subclasses / superclasses held out as novel, rotating folds, the "
     "validation fraction and split seed. `decides` marks the protocol that `hier-tl best` and `predict` rank "
     "(the sweep file's decide_on, or the only one); with several and none named they ask for --protocol."),
    ("seen / novel", "accuracy on images of seen classes (a seen image called novel is wrong) and on images of "
     "held-out classes (right when called novel). Under a `tpr:P` threshold the seen accuracy is calibrated near "
     "P by construction: its curve is flat on purpose."),
    ("new breeds", "held-out subclasses of seen superclasses called novel at the subclass level."),
    ("fold spread", "with rotating validation (folds > 1): the spread (standard deviation) of the objective over "
     "folds, in percentage points; every metric is the fold mean."),
    ("front super / sub", "the row's rank on the seen-vs-novel Pareto front of its protocol at that level (1 = the "
     "highest seen accuracy among operating points nothing beats); '-' = another operating point beats it."),
    ("stopped early", "trials ASHA stopped; their numbers are those of their last epoch."),
]


def front_columns(table: pd.DataFrame, res: Results) -> pd.DataFrame:
    """Which Pareto-front point of its own protocol (1 = highest seen accuracy) each row is, per level."""
    out = table.copy()
    th = res.thresholds
    for lvl in ("super", "sub"):
        ranks = {}
        for label in table.protocol.unique():
            ids = set(within(res.trials, label).trial_id)
            front = pareto_front(th[th.trial_id.isin(ids)], lvl) if len(th) else pd.DataFrame()
            ranks.update({} if front.empty else {(r.trial_id, r.score, str(r.threshold)): r.front_rank
                                                 for r in front.itertuples() if r.pareto})
        out[f"front {lvl}"] = [ranks.get((r["best trial"], r["score"], str(r["threshold"]))) for _, r in out.iterrows()]
    return out


def protocol_panels(res: Results, p: str, label: str, decide: str | None, out: Path) -> dict[str, str]:
    """The Pareto view and Optuna's panels of one protocol's trials."""
    suffix = f"_{p.lower()}"
    trials = within(res.trials, label)
    panels = {}
    if len(res.thresholds):
        best = trials.sort_values(f"final_{res.metric}", ascending=res.mode == "min").iloc[0]
        chosen = {"trial_id": best.trial_id, "score": best.novelty_score, "threshold": str(best.threshold)}
        th = res.thresholds[res.thresholds.trial_id.isin(set(trials.trial_id))]
        why = plot_seen_vs_novel(th, chosen, str(out / f"pareto{suffix}.png"))
        panels["Seen vs novel, every trial x score x threshold of this protocol, with its Pareto front"] = \
            why and f"not drawn: {why}" or f"pareto{suffix}.png"
    epochs = res.epochs[res.epochs.trial_id.isin(set(trials.trial_id))] if len(res.epochs) else res.epochs
    study = build_study(trials, epochs, res.meta.get("space") or {}, res.metric, res.mode)
    panels.update(draw_hpo_plots(study, str(out), suffix=suffix, metric=res.metric))
    return panels


def provenance_rows(res: Results, command: str = "") -> list[tuple[str, str]]:
    """The header: what was run (sweep file, dataset), with which code, where, by which command; and how this
    report was drawn."""
    meta, prov = res.meta, res.meta.get("provenance") or {}
    sweep_file, data, machine = prov.get("sweep_file") or {}, prov.get("dataset") or {}, prov.get("machine") or {}
    rows = [("sweep", f"{meta.get('name', res.storage.name)} at {res.storage.uri}"),
            ("sweep file", f"{sweep_file.get('path', '?')} (sha256 {str(sweep_file.get('sha256', '?'))[:12]})"),
            ("dataset", f"{data.get('path', meta.get('data', '?'))}: {data.get('images', '?')} training images "
                        f"(sha256 {str(data.get('sha256', '?'))[:12]})"),
            ("code", f"hier-tl {meta.get('hier_tl_version', '?')}, commit {meta.get('git_commit') or '?'}"),
            ("started", str(prov.get("started", "?"))),
            ("machine", ", ".join(f"{k} {v}" for k, v in machine.items()) or "?"),
            ("command", prov.get("command", "?"))]
    now = code_version()
    rows.append(("report", f"drawn {time.strftime('%Y-%m-%d %H:%M %Z')} by hier-tl {now['hier_tl_version']} "
                           f"(commit {now['git_commit'] or '?'})" + (f": {command}" if command else "")))
    return rows

UNSEEN_HEADING = "Validation vs images of unseen classes"


@dataclass
class Page:
    res: Results
    table: pd.DataFrame
    state: str
    sections: list
    command: str = ""
    unseen: pd.DataFrame | None = None  # `unseen.gaps`: validation beside figures measured on unseen images
    unseen_note: str = ""  # `unseen.verdict`
    ensemble: pd.DataFrame | None = None  # `predict.ensemble.validate_ensemble`: members alone, then together

    def _title(self) -> str:
        return f"Sweep report: {self.res.meta.get('name', self.res.storage.name)}"

    def _summary(self) -> str:
        n = len(self.res.trials)
        kinds = protocol_column(self.res.trials).nunique() if n else 0
        return (f"State: {self.state}. {n} trials under {kinds} validation protocol(s); objective "
                f"`{self.res.metric}` ({self.res.mode}); each row is the best trial of a backbone x depth within its "
                "protocol, by its final-epoch value (what its checkpoint holds).")

    def _ensemble_heading(self) -> str:
        e = self.ensemble
        return (f"Ensemble of the {len(e) - 1} best trial(s) of '{e.protocol.iloc[0]}' on their validation images "
                "(each member by its own novelty rule, the ensemble by the best one's, resolved on those images)")

    def _ensemble_cells(self) -> list[list[str]]:
        from .report import cell

        cols = [c for c in self.ensemble.columns if c != "protocol"]
        return [cols] + [[cell(c, r[c]) for c in cols] for _, r in self.ensemble.iterrows()]

    def _blocks(self):
        """(heading, table rows of this block or None, panels)."""
        for heading, panels in self.sections:
            p = heading.split(":", 1)[0]
            block = self.table[self.table.P == p] if len(self.table) and p in set(self.table.P) else None
            yield heading, block, panels

    def markdown(self) -> str:
        from .report import cell

        lines = [f"# {self._title()}", ""] + [f"- **{k}**: {v}" for k, v in provenance_rows(self.res, self.command)]
        lines += ["", self._summary(), "", "## How to read this report", ""]
        lines += [f"- **{k}**: {v}" for k, v in HOW_TO_READ]
        if self.unseen is not None:
            lines += ["", f"## {UNSEEN_HEADING}", "", *markdown_table(self.unseen), "", self.unseen_note]
        if self.ensemble is not None:
            head, *body = self._ensemble_cells()
            lines += ["", f"## {self._ensemble_heading()}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
        for heading, block, panels in self._blocks():
            lines += ["", f"## {heading}" + (" (decides)" if block is not None and block.decides.any() else ""), ""]
            if block is not None:
                cols = [c for c in block.columns if c not in ("P", "protocol", "decides")]
                lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(cell(c, r[c]) for c in cols) + " |" for _, r in block.iterrows()]
            for k, v in panels.items():
                lines += ["", f"### {k}", "", f"![{k}]({v})" if v.endswith(".png") else f"_{v}_"]
        if self.table.empty:
            lines += ["", "_No trial has reported an epoch yet._"]
        return "\n".join(lines) + "\n"

    def html(self, out: Path) -> str:
        from .report import cell

        esc = html.escape
        parts = [f"<h1>{esc(self._title())}</h1><table class='meta'>"]
        parts += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in provenance_rows(self.res, self.command)]
        parts += [f"</table><p>{esc(self._summary())}</p><h2>How to read this report</h2><dl>"]
        parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in HOW_TO_READ] + ["</dl>"]
        if self.unseen is not None:
            head, *body = cells(self.unseen)
            parts.append(f"<h2>{esc(UNSEEN_HEADING)}</h2><table class='results'><tr>"
                         + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
                         + f"</table><p>{esc(self.unseen_note)}</p>")
        if self.ensemble is not None:
            head, *body = self._ensemble_cells()
            parts.append(f"<h2>{esc(self._ensemble_heading())}</h2><table class='results'><tr>"
                         + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</table>")
        for heading, block, panels in self._blocks():
            decides = block is not None and block.decides.any()
            parts.append(f"<h2>{esc(heading)}{' <small>(decides)</small>' if decides else ''}</h2>")
            if block is not None:
                cols = [c for c in block.columns if c not in ("P", "protocol", "decides")]
                rows = "".join("<tr>" + "".join(f"<td>{esc(cell(c, r[c]))}</td>" for c in cols) + "</tr>"
                               for _, r in block.iterrows())
                parts.append("<div class='scroll'><table class='results'><tr>" +
                             "".join(f"<th>{esc(c)}</th>" for c in cols) + f"</tr>{rows}</table></div>")
            for k, v in panels.items():
                parts.append(f"<h3>{esc(k)}</h3>" + (
                    f"<img alt='{esc(k)}' src='data:image/png;base64,{base64.b64encode((out / v).read_bytes()).decode()}'>"
                    if v.endswith(".png") else f"<p><i>{esc(v)}</i></p>"))
        return ("<!doctype html><html lang='en'><meta charset='utf-8'><meta name='viewport' "
                "content='width=device-width'><title>hier-tl report</title><style>" + CSS + "</style><body>"
                + "".join(parts) + "</body></html>")


CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1340px;padding:0 1em;line-height:1.4}"
       "img{max-width:100%;height:auto;display:block}table{border-collapse:collapse;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
       "table.meta th{background:#f4f4f4;white-space:nowrap}table.meta td{word-break:break-word}"
       ".scroll{max-width:100%;overflow-x:auto}dt{font-weight:bold}dd{margin:0 0 .4em 1.5em}")
