"""A live Optuna view of a sweep: every trial mirrored into an Optuna journal file in the results folder, so
`optuna-dashboard <sweep>/optuna.journal` shows the sweep while it runs and after.

The recorder calls `sync` for each trial an event changed (start, epoch report, retry, end, the sweep's end)
with its ledger row and per-epoch metric, then `flush` (what changed reaches the file in one append, every
couple of seconds and at each trial's start and end); `sync` brings the journal's copy to it after the state table of
`studies.py`: RUNNING from its start with one intermediate value per epoch, then COMPLETE, PRUNED (ASHA
stopped it; its last value kept) or FAIL; WAITING while a retry or `--resume` is due. Start and completion
times are those of the events (a trial the journal missed gets them from its epochs' wall clock).
The metric's name is the study's objective name.

The journal is derived from hier-tl's own records (never from a pickled searcher), so it follows the folder
it lives in and survives `--resume`: `sync` is idempotent, one journal trial per Tune trial (its
`trial_id` user attribute). An interrupted trial waits; when Tune restarts it, the same journal trial runs
again (Optuna then dates its start from that restart; the `wall_s` attribute set at its end is the run
time of every start). A finished journal trial is final, as Optuna cannot reopen one; `--resume` restarts
only unfinished trials. Local storage only: Optuna's journal needs a file system with locks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.numbers import finite
from ..results.storage import Storage
from .sweep_config import SweepConfig

FILE = "optuna.journal"


class _Batched:
    """An Optuna journal backend (optuna.storages.journal.BaseJournalBackend) that keeps this process's records
    in memory until `flush()`, then appends them all in one write: the file backend syncs every record to disk
    on its own (fsync), which costs milliseconds per epoch report. Reads see the written file then the
    pending records, so the study in this process stays consistent; other readers (optuna-dashboard) see a
    batch at each flush. Safe because the driver is the journal's only writer."""

    def __init__(self, path: str):
        from optuna.storages.journal import JournalFileBackend

        self.file, self.pending = JournalFileBackend(path), []
        self.written = sum(1 for _ in self.file.read_logs(0))  # records in the file already

    def read_logs(self, log_number_from: int):
        if log_number_from < self.written:
            yield from self.file.read_logs(log_number_from)
        yield from self.pending[max(0, log_number_from - self.written):]

    def append_logs(self, logs: list) -> None:
        self.pending.extend(logs)

    def flush(self) -> None:
        if self.pending:
            self.file.append_logs(self.pending)
            self.written, self.pending = self.written + len(self.pending), []


@dataclass
class _Copy:
    """What the journal holds for one Tune trial (the driver is its only writer, so this stays true)."""

    id: int  # Optuna's storage trial id
    state: Any  # optuna TrialState
    status: str  # the sweep status it was last given
    values: dict[int, float] = field(default_factory=dict)  # its intermediate values


class Journal:
    """The sweep's study in `<sweep>/optuna.journal` (named after the sweep), or nothing on remote storage or
    once a write failed (a one-line warning: the sweep goes on without its live view)."""

    def __init__(self, storage: Storage, sweep: SweepConfig):
        self.sweep, self.metric, self.study = sweep, sweep.scheduler.metric, None
        self.copies: dict[str, _Copy] = {}  # Tune trial id -> its journal trial
        if not storage.is_local:
            return
        try:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import BaseJournalBackend

            from .studies import quiet, space_distributions

            BaseJournalBackend.register(_Batched)
            self.dists = space_distributions(sweep.space)
            self.log = _Batched(str(Path(storage.exp) / FILE))
            self.backend = JournalStorage(self.log)
            with quiet():
                self.study = optuna.create_study(study_name=sweep.name, storage=self.backend, load_if_exists=True,
                                                 direction="maximize" if sweep.scheduler.mode == "max" else "minimize")
                if self.study.metric_names != [self.metric]:
                    self.study.set_metric_names([self.metric])
            self.study_id = self.backend.get_study_id_from_name(sweep.name)
            for t in self.backend.get_all_trials(self.study_id, deepcopy=False):
                if "trial_id" in t.user_attrs:
                    self.copies[str(t.user_attrs["trial_id"])] = _Copy(
                        self.backend.get_trial_id_from_study_id_trial_number(self.study_id, t.number), t.state,
                        str(t.user_attrs.get("status", "")), dict(t.intermediate_values))
            self.log.flush()
        except Exception as e:  # noqa: BLE001 - a dashboard nicety must never stop a sweep
            self._off(e)

    def flush(self) -> None:
        """Write what the syncs since the last flush changed, in one append (optuna-dashboard then sees it)."""
        if self.study is None:
            return
        try:
            self.log.flush()
        except Exception as e:  # noqa: BLE001
            self._off(e)

    def sync(self, row: dict, curve: dict[int, float], ended: float | None = None) -> None:
        """Bring the journal's copy of one trial to its ledger `row` (status, final value) and its per-epoch
        metric `curve`: create it, add the epochs it lacks, move its state. An unchanged trial writes nothing.
        `ended` (epoch seconds): when a trial the journal never saw last reported."""
        if self.study is None:
            return
        try:
            self._sync(row, {int(e): float(v) for e, v in curve.items() if finite(v) is not None}, ended)
        except Exception as e:  # noqa: BLE001
            self._off(e)

    def catch_up(self, rows: list[dict], epochs: pd.DataFrame, recorded: dict[str, dict[int, float]]) -> None:
        """At the sweep's (re)start: every trial as the ledger has it (interrupted ones now wait, ones the
        journal missed are added); `epochs` is the epochs table, `recorded` what was reported since."""
        from .studies import curves

        if self.study is None:
            return
        on_disk = curves(epochs, self.metric)
        ends = epochs.groupby(epochs.trial_id.astype(str))["time"].max().to_dict() if "time" in epochs else {}
        for row in rows:
            tid = str(row["trial_id"])
            self.sync(row, {**on_disk.get(tid, {}), **recorded.get(tid, {})}, finite(ends.get(tid)))

    def _sync(self, row: dict, curve: dict[int, float], ended: float | None) -> None:
        from optuna.trial import TrialState

        from .studies import trial_state

        mine = self.copies.get(str(row["trial_id"]))
        if mine is None:
            self._create(row, curve, ended)
            return
        if mine.state.is_finished():
            return
        status = str(row.get("status") or "")
        state, value = trial_state(status, finite(row.get(f"final_{self.metric}")), stopped=TrialState.PRUNED)
        b = self.backend
        for epoch, v in sorted(curve.items()):
            if mine.values.get(epoch) != v:
                b.set_trial_intermediate_value(mine.id, epoch, v)
                mine.values[epoch] = v
        if status != mine.status:  # user attributes first: a finished trial takes no more
            b.set_trial_user_attr(mine.id, "status", status)
            mine.status = status
        if state != mine.state:
            if state.is_finished():
                b.set_trial_user_attr(mine.id, "wall_s", finite(row.get("wall_s")))
            b.set_trial_state_values(mine.id, state, None if value is None else [value])
            mine.state = state

    def _create(self, row: dict, curve: dict[int, float], ended: float | None) -> None:
        """A new journal trial: RUNNING from now, or a finished one dated by its last report and wall time."""
        from optuna.trial import TrialState

        from .studies import frozen_trial

        t = frozen_trial(pd.Series(row), self.dists, self.metric, curve, stopped=TrialState.PRUNED)
        if t.state.is_finished():  # (create_trial dates a RUNNING trial now and a WAITING one not at all)
            t.datetime_complete = datetime.fromtimestamp(ended) if ended is not None else datetime.now()
            t.datetime_start = t.datetime_complete - timedelta(seconds=finite(row.get("wall_s")) or 0.0)
            t.set_user_attr("wall_s", finite(row.get("wall_s")))
        trial_id = self.backend.create_new_trial(self.study_id, template_trial=t)
        self.copies[str(row["trial_id"])] = _Copy(trial_id, t.state, t.user_attrs["status"], dict(curve))

    def _off(self, e: Exception) -> None:
        print(f"warning: the Optuna journal (live dashboard) is off for this sweep: {type(e).__name__}: {e}",
              file=sys.stderr)
        self.study = None
