"""What a sweep's results mean: the row schema, the one best-trial rule, and reading a results folder.

Every row carries its resolved config (one column per key), seed and code version, so a table read on
its own says what produced it. `load_results(uri)` reads a local folder or an s3:// / gs:// URI.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field

import pandas as pd

from ..core.errors import ConfigError, SelectionError, StorageError
from ..core.numbers import plain
from ..core.yamlio import loads
from ..train.metrics import metric_mode
from ..train.train_config import CONFIG_KEYS
from .storage import Storage


@dataclass
class Results:
    """A sweep's tables and definition, as read from its folder."""

    storage: Storage
    trials: pd.DataFrame
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    thresholds: pd.DataFrame = field(default_factory=pd.DataFrame)
    meta: dict = field(default_factory=dict)  # the stored sweep file

    @property
    def metric(self) -> str:
        return self.meta.get("scheduler", {}).get("metric", "objective")

    @property
    def mode(self) -> str:
        return self.meta.get("scheduler", {}).get("mode", "max")

    def mode_of(self, metric: str) -> str:
        """The sweep's mode for its own metric; the metric's natural direction for any other."""
        return self.mode if metric == self.metric else metric_mode(metric)


def load_results(uri: str, tables: tuple[str, ...] = ("epochs", "thresholds")) -> Results:
    """Read the sweep folder at `uri` (local or object storage): trials, epochs, thresholds, sweep.yaml.
    Damage is one StorageError line naming the file; files of another program say the folder is not a
    hier-tl results folder; unreadable parts of the epochs / thresholds tables are skipped with a warning."""
    st = Storage.open(uri)
    if not st.has_trials():
        raise SelectionError(f"{uri}: no trials.parquet here (expected a sweep results folder, <storage>/<name>/, "
                             "as printed at the end of `hier-tl sweep`)")
    res = Results(st, st.read("trials"), meta=stored_sweep_file(st))
    for name in tables:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            setattr(res, name, st.read(name))
        for w in caught:  # skipped parts: one line each, not Python's warning format
            print(f"warning: {w.message}", file=sys.stderr)
    return res


def metric_column(trials: pd.DataFrame, metric: str) -> str:
    for col in (f"final_{metric}", metric):
        if col in trials:
            return col
    options = sorted(c.removeprefix("final_") for c in trials.columns if c.startswith("final_"))
    if not options:
        raise SelectionError("no trial has reported an epoch yet, so there is no metric to rank by "
                             "(has any trial reported an epoch yet? `hier-tl report` shows the sweep's state)")
    raise SelectionError(f"no metric {metric!r} in trials.parquet; metrics: {', '.join(options)}")


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """THE rule, used by the progress line, the table, `best` and `predict`: the trial whose final-epoch
    `metric` (what its last checkpoint delivers) is best for `mode`; ties go to the earlier trial;
    trials without a value never win. None when no trial has a value."""
    col = next((c for c in (f"final_{metric}", metric) if c in trials), None)
    if col is None:
        return None
    values = pd.to_numeric(trials[col], errors="coerce")
    values = values[values.notna() & values.map(lambda v: math.isfinite(v))]
    if values.empty:
        return None
    return trials.loc[values.idxmax() if mode == "max" else values.idxmin()]


def best_per_variant(trials: pd.DataFrame, metric: str, mode: str, keys=("backbone", "depth")) -> list[pd.Series]:
    """The best trial (by `best_trial`) of each group of `keys`, in first-seen group order."""
    out = []
    for _, group in trials.groupby(list(keys), sort=False):
        best = best_trial(group, metric, mode)
        out.append(group.iloc[0] if best is None else best)
    return out


def select(trials: pd.DataFrame, metric: str, mode: str, where: list[str] | None = None) -> pd.Series:
    """The best trial among those matching every `key=value` of `where`; SelectionError if none."""
    df = trials
    for cond in where or []:
        if "=" not in cond:
            raise SelectionError(f"--where {cond!r}: expected key=value")
        key, value = cond.split("=", 1)
        if key not in df:
            raise SelectionError(f"--where {key}: no such column in trials.parquet")
        df = df[df[key].astype(str) == value]
    metric_column(trials, metric)
    best = best_trial(df, metric, mode)
    if best is None:
        raise SelectionError(f"no trial with a value for {metric!r} matches {' and '.join(where or []) or 'anything'}"
                             " (has any trial reported an epoch yet?)")
    return best



def best_document(trial: pd.Series, checkpoint: str) -> dict:
    """What `hier-tl best` prints: the trial's config, final metrics and checkpoint."""
    return {"trial_id": trial["trial_id"], "status": trial["status"], "checkpoint": checkpoint,
            "config": {k: plain(trial[k]) for k in trial.index if k in CONFIG_KEYS},
            "metrics": {k.removeprefix("final_"): plain(trial[k]) for k in trial.index if k.startswith("final_")},
            "epochs_run": int(trial["epochs_run"])}


def checkpoints(st: Storage, trial: pd.Series) -> list[str]:
    """The trial's checkpoint files (relative to the sweep folder), newest first."""
    tdir = str(trial.get("trial_dir") or "")
    if not tdir:
        return []
    dirs = [d for d in st.listdir(tdir) if d.startswith("checkpoint_")]
    return [f"{tdir}/{d}/checkpoint.pt" for d in sorted(dirs, reverse=True)]


def threshold_grid(res: Results, trial_id: str, epoch: int, score: str) -> dict[str, dict[str, float]]:
    """Each rule of the sweep's threshold grid (`thresholds.parquet`) as `trial_id` resolved it for `score` at
    `epoch` (fold means, like the trial's own), per level: {"super": {"tpr:0.98": -1773.6, ...}, "sub": {...}}.
    A `SUPER/SUB` row lends each level its own rule, so `tpr:0.99/tpr:0.98` resolves from rows that hold
    `tpr:0.99` and `tpr:0.98` at those levels. Empty when `res` holds no thresholds table (read it with
    `load_results(..., tables=("thresholds",))`)."""
    from ..core.config import Threshold

    table = res.thresholds
    need = {"trial_id", "epoch", "score", "threshold", "threshold_super", "threshold_sub"}
    if table.empty or not need <= set(table.columns):
        return {}
    rows = table[(table["trial_id"] == trial_id) & (table["epoch"] == epoch) & (table["score"] == score)]
    grid: dict[str, dict[str, float]] = {"super": {}, "sub": {}}
    for spec, sup, sub in rows[["threshold", "threshold_super", "threshold_sub"]].itertuples(index=False):
        try:
            rules = Threshold.per_level(spec)
        except ConfigError:
            continue
        for lvl, value in (("super", sup), ("sub", sub)):
            grid[lvl].setdefault(str(rules[lvl]), float(value))
    return grid


def trial_checkpoint(st: Storage, trial: pd.Series, epoch: str = "last") -> tuple[dict, str]:
    """The trial's checkpoint, loaded, and its URI: `last` = the newest written completely (a truncated
    newest one, from a full disk or a killed upload, is skipped with a warning); `best` = the one of the
    trial's best epoch by the sweep metric (kept beside the last)."""
    import sys

    from ..core.errors import CheckpointError
    from ..train import checkpoint

    want = None if epoch == "last" else int(trial.get("best_epoch") or -1)
    for rel in checkpoints(st, trial):
        try:
            ckpt = checkpoint.load(st.read_bytes(rel), name=st.file_uri(rel))
        except CheckpointError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        if want is None or int(ckpt["epoch"]) == want:
            return ckpt, st.file_uri(rel)
    where = st.file_uri(str(trial.get("trial_dir") or "?"))
    if want is not None:
        raise SelectionError(f"trial {trial['trial_id']}: no complete checkpoint of its best epoch ({want}) under "
                             f"{where} (sweeps before hier-tl kept it hold the last only: use --epoch last)")
    raise SelectionError(f"trial {trial['trial_id']} has no complete checkpoint under {where}: choose another "
                         "trial (--trial ID, or --where), or retrain its config on every class with --refit")


SWEEP_SECTIONS = ("base", "space", "search", "scheduler")  # mappings every stored sweep file holds


def stored_sweep_file(st: Storage) -> dict:
    """sweep.yaml as stored when the sweep started ({} if absent), checked to be a sweep file of hier-tl's."""
    if not st.exists("sweep.yaml"):
        return {}
    where = st.file_uri("sweep.yaml")
    try:
        meta = loads(st.read_bytes("sweep.yaml").decode(), where)
    except UnicodeDecodeError:
        raise StorageError(f"cannot read {where}: not text (damaged?); restore it from a copy") from None
    except ConfigError as e:
        raise StorageError(f"{e}; restore it from a copy (hier-tl writes it once, when the sweep starts)") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), dict) for k in SWEEP_SECTIONS):
        what = "empty" if meta is None else f"a {type(meta).__name__}" if not isinstance(meta, dict) else \
            f"a mapping of {', '.join(map(str, list(meta)[:5]))}"
        raise StorageError(f"{st.uri} is not a hier-tl results folder: its sweep.yaml is {what}, not the sweep "
                           f"file hier-tl stores (with {', '.join(SWEEP_SECTIONS)}); pass the folder `hier-tl "
                           "sweep` printed, or restore sweep.yaml from a copy")
    metric, mode = meta["scheduler"].get("metric", "objective"), meta["scheduler"].get("mode", "max")
    if not isinstance(metric, str) or mode not in ("max", "min"):
        raise StorageError(f"{where}: scheduler.metric {metric!r} / mode {mode!r} is not a metric name and max or "
                           "min (edited or damaged); restore it from a copy")
    return meta
