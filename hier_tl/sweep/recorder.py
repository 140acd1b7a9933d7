"""The Tune callback that records a sweep: a thin adapter from Tune's hooks to the Ray-free `TrialLedger`
(statuses and summaries) and the append-only `epochs/` and `thresholds/` tables.

Cost per report does not grow with the sweep: rows are buffered and flushed as new parts every couple of
seconds, at trial end and at the end; the small trials table is rewritten only when it changed, at most
as often. A killed driver loses at most the last couple of seconds of rows, and `--resume` restores them
from each trial's newest checkpoint, which carries every epoch the trial reported (`reported.json`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from ..core.config import Range
from ..core.env import env_number
from ..core.errors import StorageError
from ..results.ledger import TrialLedger
from ..results.storage import Storage
from ..train.train_config import CONFIG_KEYS, config_columns
from .board import read_board
from .journal import Journal
from .progress import progress_line
from .space import expected_trials
from .sweep_config import SweepConfig

REPORTED = "reported.json"  # beside checkpoint.pt: every epoch the trial reported, as recorded rows
NOT_METRICS = {"config", "done", "trial_id", "experiment_id", "date", "pid", "hostname", "node_ip", "experiment_tag",
               "timesteps_total", "episodes_total", "training_iteration", "time_this_iter_s", "time_total_s",
               "timestamp", "checkpoint_dir_name", "should_checkpoint", "time_since_restore",
               "iterations_since_restore", "node", "node_id", "device"}
INFO = ("node", "node_id", "device")
CONTEXT_KEYS = (*CONFIG_KEYS, "hier_tl_version", "git_commit")


def result_rows(tid: str, result: dict, ctx: dict) -> tuple[dict, dict, list[dict]]:
    """One report as (its metrics, its epochs row, its threshold rows); rows carry the trial's resolved
    config, seed and code version (`ctx`)."""
    metrics = {k: v for k, v in result.items() if k not in NOT_METRICS and k != "thresholds_json"
               and (isinstance(v, (int, float, str)) or v is None)}
    epoch = {"trial_id": tid, **ctx, **metrics, **{k: result.get(k) for k in INFO}, "time": time.time()}
    extra = {k: v for k, v in ctx.items() if k != "threshold"}
    rows = [{"trial_id": tid, "epoch": metrics["epoch"], **r, **extra, "trial_threshold": ctx["threshold"]}
            for r in json.loads(result.get("thresholds_json") or "[]")]
    return metrics, epoch, rows


class Recorder(Callback):
    def __init__(self, storage: Storage, sweep: SweepConfig, lease=None, flush_seconds: float = 2.0,
                 progress_every: float = 5.0, heartbeat: float | None = None, board=None, log: Path | None = None):
        super().__init__()
        self.storage, self.sweep, self.lease, self.board, self.log = storage, sweep, lease, board, log
        self.started = False  # Tune called setup(): the sweep began (a refused start never gets here)
        heartbeat = env_number("HIER_TL_HEARTBEAT_S", 30.0, Range(0.1, 86400)) if heartbeat is None else heartbeat
        self.failure: StorageError | None = None  # a write that failed (full disk...): the sweep ends with it
        self.flush_seconds, self.progress_every, self.heartbeat = flush_seconds, progress_every, heartbeat
        self.ledger = TrialLedger(sweep.scheduler.metric, sweep.scheduler.mode)
        self._ctx: dict[str, dict] = {}
        self._curves: dict[str, dict[int, float]] = {}  # trial -> epoch -> sweep metric, for the journal
        self._journal_due: dict[str, None] = {}  # trials the journal has yet to follow (an ordered set)
        self.t0 = self.last_print = self.last_trials = time.time()
        self.planned = expected_trials(sweep)

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks into tuner.pkl; a resumed sweep gets a new recorder (raycompat.set_callbacks),
        so only the settings go there: no actor handle, open journal or ledger (which grows with the sweep)."""
        return {k: self.__dict__[k] for k in ("storage", "sweep", "flush_seconds", "progress_every", "heartbeat",
                                              "log", "planned")}

    # -- Tune hooks --
    def setup(self, **info) -> None:
        self.started = True
        st = self.storage
        self.ledger = TrialLedger.from_rows(st.read("trials"), self.sweep.scheduler.metric, self.sweep.scheduler.mode)
        self.epochs = st.table("epochs", flush_seconds=self.flush_seconds)
        self.thresholds = st.table("thresholds", flush_seconds=self.flush_seconds)
        self.trials = st.table("trials", flush_seconds=self.flush_seconds)
        self.journal = Journal(st, self.sweep)
        self._backfill()
        self.t0 = time.time()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        cols = {"trial_dir": Path(str(trial.path or "")).name, **self._context(trial)}
        self.ledger.start(trial.trial_id, cols)
        self._mirror(trial.trial_id)
        self._flush(trials_now=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._mirror(trial.trial_id)  # followed at the flush that _record may make
        self._record(trial.trial_id, result, self._context(trial))
        self._progress()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.ledger.recover(trial.trial_id, error_text(trial))
        self._mirror(trial.trial_id)
        self._flush(trials_now=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ledger.complete(trial.trial_id, int(self._context(trial)["epochs"]))
        self._closed(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = error_text(trial)
        self.ledger.error(trial.trial_id, error)
        print(f"trial {trial.trial_id} failed: {error} (traceback: {trial.error_file or self.log})", flush=True)
        self._closed(trial.trial_id)

    def on_step_end(self, iteration, trials, **info) -> None:
        self._flush()
        if self.lease is not None:
            self.lease.renew()
        if time.time() - self.last_print >= self.heartbeat:  # long epochs: say it is alive
            self._progress(force=True)

    def on_experiment_end(self, trials, **info) -> None:
        self.ledger.end()
        self._flush(force=True)
        for row in self.ledger.rows():  # what was running now waits for --resume
            self._mirror(row["trial_id"])
        self._sync_journal()
        for table in (self.epochs, self.thresholds, self.trials):
            self._safely(table.compact, table.name)

    # -- helpers --
    def _context(self, trial) -> dict:
        if trial.trial_id not in self._ctx:
            self._ctx[trial.trial_id] = config_columns(self.sweep.train_config(trial.config))
        return self._ctx[trial.trial_id]

    def _closed(self, tid: str) -> None:
        self._mirror(tid)
        self._flush(trials_now=True)  # its status is on disk now; its last epochs are in reported.json anyway
        self._progress()

    def _mirror(self, tid: str) -> None:
        """The live Optuna journal will follow the trial's ledger row and per-epoch metric: at the next flush of
        the trials table (within `flush_seconds`; at once on a trial's start and end), each changed trial once,
        so the journal's fsync per write is not paid per report."""
        self._journal_due[tid] = None

    def _sync_journal(self) -> None:
        due, self._journal_due = self._journal_due, {}
        for tid in due:
            self.journal.sync(self.ledger.row(tid), self._curves.get(tid, {}))
        self.journal.flush()

    def _record(self, tid: str, result: dict, ctx: dict, ledger: bool = True) -> None:
        """One report into the tables, and (unless `ledger` is False: a backfilled epoch the ledger already
        counted) into the trial's ledger row."""
        metrics, epoch, rows = result_rows(tid, result, ctx)
        self._curves.setdefault(tid, {})[int(metrics["epoch"])] = metrics.get(self.sweep.scheduler.metric)
        if ledger:
            self.ledger.result(tid, int(metrics["epoch"]), metrics, info={k: result.get(k) for k in INFO})
        self._safely(lambda: (self.epochs.append([epoch]), self.thresholds.append(rows)), "epochs")
        self._flush()

    def _safely(self, fn, what: str):
        """Storage writes: a failure (full disk, lost bucket) is kept, so the sweep ends with its one line."""
        try:
            return self.storage.guard(fn, "write", what)
        except StorageError as e:
            self.failure = self.failure or e
            raise

    def _flush(self, force: bool = False, trials_now: bool = False) -> None:
        """Parts of the epochs and thresholds tables when due (or forced); the trials whose row changed, when due
        or at once (`trials_now`: a trial started or ended, so a killed driver never loses a status); the live
        journal when due."""
        now = time.time()
        for table in (self.epochs, self.thresholds):
            self._safely(table.flush if force else table.maybe_flush, table.name)
        due = force or now - self.last_trials >= self.flush_seconds
        if due or trials_now:
            changed = self.ledger.pop_changed()  # only the trials whose row changed: O(changes), not O(trials)
            if changed:
                self._safely(lambda: (self.trials.append(changed), self.trials.flush()), "trials")
        if due:
            self._sync_journal()
            self.last_trials = now

    def _progress(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_print >= self.progress_every:
            self.last_print = now
            s = self.sweep
            print(progress_line(self.ledger, self.planned, s.max_epochs, now - self.t0, s.scheduler.metric,
                                s.scheduler.mode, tuple(dict.fromkeys(("backbone", "depth", *s.space))),
                                read_board(self.board), s.decision_label), flush=True)

    def _backfill(self) -> None:
        """After a killed driver: epochs a trial reported (its newest checkpoint says) that never reached disk."""
        epochs = self.storage.read("epochs")
        have = set(zip(epochs.trial_id, epochs.epoch.astype(int))) if len(epochs) else set()
        for row in self.ledger.rows():
            ctx, ran = {k: row.get(k) for k in CONTEXT_KEYS}, int(row.get("epochs_run") or 0)
            live = row["status"] not in ("completed", "stopped", "errored")
            for result in sorted(_reported(self.storage, row), key=lambda r: r["epoch"]):
                if (row["trial_id"], int(result["epoch"])) not in have:  # the tables lack it; the ledger only
                    # when it is beyond what the row counts (an earlier epoch there would roll the row back)
                    self._record(row["trial_id"], result, ctx, ledger=live and int(result["epoch"]) > ran)
        self.ledger.end()  # what was running is interrupted until Tune starts it again
        self._flush(force=True)
        self.journal.catch_up(self.ledger.rows(), epochs, self._curves)
        self.journal.flush()


def _reported(st: Storage, row: dict) -> list[dict]:
    """The reports stored beside the trial's newest complete checkpoint."""
    from ..results.reading import checkpoints

    for rel in checkpoints(st, pd.Series(row)):
        path = rel.rsplit("/", 1)[0] + "/" + REPORTED
        try:
            found = json.loads(st.read_text(path))
        except (ValueError, StorageError, UnicodeDecodeError):
            continue
        if isinstance(found, list):  # what hier-tl wrote: a list of reports, each with its epoch
            return [r for r in found if isinstance(r, dict) and isinstance(r.get("epoch"), int)
                    and not isinstance(r.get("epoch"), bool)]
    return []


def error_text(trial) -> str:
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "unknown error"
