"""Optuna's standard HPO panels (importance, parallel coordinates, history, learning curves) for a sweep,
drawn from a study rebuilt from its tables (`sweep.studies`). Nothing here needs Ray or a checkpoint."""
from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ..core.fileio import atomic_path  # noqa: E402
from ..sweep.studies import quiet as _quiet  # noqa: E402

__all__ = ["draw_hpo_plots"]

MIN_PARALLEL = 5  # distinct completed configurations below which parallel coordinates show nothing useful
_PANELS = {  # title -> (file name, optuna.visualization.matplotlib function name)
    "Hyperparameter importance": ("hpo_importance.png", "plot_param_importances"),
    "Parallel coordinates": ("hpo_parallel.png", "plot_parallel_coordinate"),
    "Optimization history": ("hpo_history.png", "plot_optimization_history"),
    "Intermediate values": ("hpo_intermediate.png", "plot_intermediate_values"),
}


def _save_atomic(fig: Any, path: str) -> None:
    """Write ``fig`` as PNG through ``fileio.atomic_path``: never a partial file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _one_line(exc: BaseException) -> str:
    """An exception as one short line."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}"[:200]


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
    if title == "Parallel coordinates":
        if not any(t.params for t in done):
            return "completed trials carry no search-space parameters"
        distinct = len({tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in done})
        if distinct < MIN_PARALLEL:
            return (f"{distinct} distinct configuration(s) completed; parallel coordinates say something from "
                    f"{MIN_PARALLEL} on (the table lists each one)")
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


def _draw_panel(study: optuna.Study, title: str, path: str, metric: str = "objective") -> None:
    """Draw one Optuna matplotlib panel, named as the report names things, and save it atomically to ``path``."""
    vis = optuna.visualization.matplotlib
    fn = getattr(vis, _PANELS[title][1])
    kwargs: dict[str, Any] = {}
    if title in ("Optimization history", "Parallel coordinates"):
        kwargs = {"target_name": metric + (" (%)" if _percent(metric) else "")}
        if _percent(metric):
            kwargs["target"] = lambda t: 100 * t.value
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
            _tidy(study, title, first, fig, metric)
            _save_atomic(fig, path)
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def _percent(metric: str) -> bool:
    """Accuracies and the objective (a mean of accuracies) are shown in %, as in the table."""
    return metric == "objective" or metric.endswith("_acc")


def _tidy(study: optuna.Study, title: str, ax, fig, metric: str = "objective") -> None:
    """Trials named by their trial id (as in the table), integer epoch axes, composite values as `3 / 1`."""
    from matplotlib.ticker import MaxNLocator

    ids = {t.number: t.user_attrs.get("trial_id", str(t.number)) for t in study.trials}
    if title == "Intermediate values":
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} after each epoch")
        if _percent(metric):
            from matplotlib.ticker import PercentFormatter
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        legend = ax.get_legend()
        if legend is not None and len(study.trials) > 12:
            legend.remove()
        elif legend is not None:
            for text in legend.get_texts():
                n = text.get_text().removeprefix("Trial")
                text.set_text(ids.get(int(n), text.get_text()) if n.isdigit() else text.get_text())
    if title == "Optimization history":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(ids) <= 15:
            ax.set_xticks(sorted(ids), [ids[n] for n in sorted(ids)], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("trial (in the order they started)")
    for axis in fig.axes:
        for get, put in ((axis.get_xticklabels, axis.set_xticklabels), (axis.get_yticklabels, axis.set_yticklabels)):
            labels = [lab.get_text() for lab in get()]
            if any(s.startswith("(") and s.endswith(")") and "," in s for s in labels):
                put([_composite(s) for s in labels])


def _composite(text: str) -> str:
    """`('3', '1')` -> `3 / 1`: a value of keys that vary together (`holdout_subclasses+holdout_superclasses`)."""
    if text.startswith("(") and text.endswith(")"):
        return " / ".join(p.strip().strip("'\"") for p in text[1:-1].split(",") if p.strip())
    return text


def draw_hpo_plots(study: optuna.Study, out_dir: str, suffix: str = "", metric: str = "objective") -> dict[str, str]:
    """Save Optuna's importance, parallel, history and intermediate-value panels as PNGs (`hpo_<panel><suffix>.png`).

    Returns ``{title: file name in out_dir}`` for drawn panels and
    ``{title: "not drawn: <reason>"}`` for the others; a stale PNG of an undrawn panel is removed.
    """
    os.makedirs(out_dir, exist_ok=True)
    out: dict[str, str] = {}
    for title, (name, _) in _PANELS.items():
        name = name.replace(".png", f"{suffix}.png")
        path = os.path.join(out_dir, name)
        reason = _why_not(study, title)
        if reason is None:
            try:
                _draw_panel(study, title, path, metric)
                out[title] = name
                continue
            except Exception as exc:  # an optuna/matplotlib corner case must not kill the report
                reason = _one_line(exc)
        out[title] = f"not drawn: {reason}"
        if os.path.exists(path):
            os.unlink(path)
    return out


