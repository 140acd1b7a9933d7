"""Every trial's status and one-row summary, kept incrementally: O(1) amortised work per report.

`TrialLedger` knows nothing of Ray: a Tune callback forwards its hooks here (start / result / recover /
complete / error / end) and appends the rows `pop_changed()` returns to the trials table.

Statuses: pending -> running -> completed | stopped | errored; a retried failure (`recover`) goes back to
pending until started again; `end()` marks whatever is still pending or running as interrupted.

Re-reported epochs: a report at epoch e supersedes every earlier report at an epoch >= e (the trial was
restored from a checkpoint taken before e). Each trial keeps a stack of prefix summaries (epoch, compute
time, best value, best epoch); a report pops the entries it supersedes and pushes one, so `compute_s` and
`best_<metric>` are always those of the surviving history, without ever rescanning it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..core.numbers import finite, real_number
from ..core.numbers import plain as _plain

STATUSES = ("pending", "running", "completed", "stopped", "errored", "interrupted")
NO_EPOCH_ERROR = "finished without reporting an epoch"
_OWN = ("trial_id", "status", "error", "epochs_run", "retries", "wall_s", "compute_s")  # fields the ledger sets




@dataclass
class _Mark:
    """Summary of a trial's history up to `epoch`. `exact=False`: restored from a trials row without the
    epochs below it, so a roll-back inside it is estimated (compute pro rata, best only if still inside)."""

    epoch: int
    compute: float
    best: float | None
    best_epoch: int | None
    exact: bool = True


@dataclass
class _Trial:
    marks: list[_Mark] = field(default_factory=list)
    started: float | None = None  # clock() at the last start; None while not running
    wall: float = 0.0  # wall time of the closed run segments
    finals: set[str] = field(default_factory=set)  # final_* keys of the last report


class TrialLedger:
    """Status and summary row of every trial of one sweep, ranked on `metric` (`mode` "max" or "min")."""

    def __init__(self, metric: str, mode: str, clock: Callable[[], float] = time.time):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.metric, self.mode, self.clock = metric, mode, clock
        self._rows: dict[str, dict] = {}
        self._state: dict[str, _Trial] = {}
        self._counts = dict.fromkeys(STATUSES, 0)
        self.dirty = False
        self._changed: dict[str, None] = {}  # trials whose row changed since pop_changed (ordered set)

    # -- events --
    def start(self, tid: str, columns: dict | None = None) -> None:
        """The trial (re)starts running; a new row gets `columns` (resolved config etc.) copied in."""
        row, t = self._get(tid, columns)
        now = self.clock()
        if t.started is not None:  # started again without being closed (paused and resumed): keep that time
            t.wall += now - t.started
        t.started = now
        self._set_status(tid, "running")
        row["wall_s"] = t.wall

    def result(self, tid: str, epoch: int, metrics: dict, info: dict | None = None) -> None:
        """One epoch's report: `final_<k>` for each metric, best and compute so far; `info` (node, device...)
        goes onto the row as is. Reports at or below an earlier epoch supersede it (see the module doc)."""
        row, t = self._get(tid)
        epoch = int(epoch)
        top = self._push(t, epoch, metrics)
        finals = {f"final_{k}": v for k, v in metrics.items() if k != "epoch"}
        for stale in t.finals - finals.keys():
            row[stale] = None
        t.finals = set(finals)
        row.update(finals)
        row.update({k: v for k, v in (info or {}).items() if k not in _OWN})
        row.update({"epochs_run": epoch, f"best_{self.metric}": top.best, "best_epoch": top.best_epoch,
                    "compute_s": top.compute})
        if t.started is None:  # reporting without a start event: it is running now
            t.started = self.clock()
        self._set_status(tid, "running")
        row["wall_s"] = self._wall(t)

    def recover(self, tid: str, error: str) -> None:
        """A failed attempt that will be retried: count it, keep its error and time; pending until restarted."""
        row, t = self._get(tid)
        row["retries"] = int(row.get("retries") or 0) + 1
        row["error"] = error
        self._close(row, t)
        self._set_status(tid, "pending")

    def complete(self, tid: str, planned_epochs: int) -> None:
        """The trial returned: completed if it ran every planned epoch, stopped (early) if some, errored if none."""
        row, t = self._get(tid)
        ran = int(row.get("epochs_run") or 0)
        if ran <= 0:
            row["error"] = row.get("error") or NO_EPOCH_ERROR
        self._close(row, t)
        self._set_status(tid, "completed" if ran >= planned_epochs else "stopped" if ran > 0 else "errored")

    def error(self, tid: str, error: str) -> None:
        """The trial failed for good."""
        row, t = self._get(tid)
        row["error"] = error
        self._close(row, t)
        self._set_status(tid, "errored")

    def end(self) -> None:
        """The sweep ended: every pending or running trial is interrupted, its wall time closed."""
        for tid, row in self._rows.items():
            if row["status"] in ("pending", "running"):
                self._close(row, self._state[tid])
                self._set_status(tid, "interrupted")

    # -- queries --
    def rows(self) -> list[dict]:
        """Copies of every row, in first-seen order; a running trial's `wall_s` runs up to now."""
        return [self.row(tid) for tid in self._rows]

    def row(self, tid: str) -> dict:
        """A copy of one trial's row (KeyError if unknown)."""
        row, t = dict(self._rows[tid]), self._state[tid]
        if t.started is not None:
            row["wall_s"] = self._wall(t)
        return row

    def counts(self) -> dict[str, int]:
        """Number of trials in each status (every status present, zeros included)."""
        return dict(self._counts)

    def running(self) -> list[str]:
        """Ids of the trials running now."""
        return [tid for tid, row in self._rows.items() if row["status"] == "running"]

    def recent_epoch_s(self) -> list[float]:
        """Compute seconds of the latest epoch of each running trial that has run two or more: the pace now,
        without the one-time costs of a first epoch (decoding, reference features) or an earlier slow spell."""
        paces = []
        for tid in self.running():
            marks = self._state[tid].marks
            if len(marks) >= 2 and marks[-1].epoch > marks[-2].epoch:
                paces.append((marks[-1].compute - marks[-2].compute) / (marks[-1].epoch - marks[-2].epoch))
        return [s for s in paces if s > 0]

    def pop_changed(self) -> list[dict]:
        """Copies of the rows that changed since the last call (append them to the trials table); clears."""
        changed, self._changed, self.dirty = self._changed, {}, False
        return [self.row(tid) for tid in changed]

    def pop_dirty(self) -> bool:
        """Whether any row changed since the last call (then rewrite the trials table); clears the flag."""
        dirty, self.dirty = self.dirty, False
        return dirty

    # -- resume --
    @classmethod
    def from_rows(cls, rows: Iterable[dict] | Any, metric: str, mode: str, epochs: Iterable[dict] | Any = None,
                  clock: Callable[[], float] = time.time) -> "TrialLedger":
        """Restore from a saved trials table (list of dicts or DataFrame); pending/running rows become
        interrupted until started again. Values no ledger writes (text counts, an unknown status, a row
        without an id) restore as nothing recorded, never as an error. `epochs` (optional, the epochs table) lets a later roll-back below
        the saved epoch count be exact; without it that roll-back is estimated (see `_Mark`)."""
        led = cls(metric, mode, clock)
        history: dict[str, list[dict]] = {}
        for e in _records(epochs):
            if _count(e.get("epoch"), None) is not None:
                history.setdefault(e.get("trial_id"), []).append(e)
        for rec in _records(rows):
            row = {k: _plain(v) for k, v in rec.items()}
            tid, status = row.get("trial_id"), row.get("status")
            if tid is None:  # a row no ledger wrote: nothing to restore it under
                continue
            row.update(epochs_run=_count(row.get("epochs_run")), retries=_count(row.get("retries")),
                       wall_s=_seconds(row.get("wall_s")), compute_s=_seconds(row.get("compute_s")),
                       best_epoch=_count(row.get("best_epoch"), None))
            t = _Trial(wall=row["wall_s"], finals={k for k in row if k.startswith("final_")})
            status = status if status in STATUSES else "pending"  # unknown: it has to run again
            row["status"] = "interrupted" if status in ("pending", "running") else status
            if row["status"] != status:  # restored as interrupted: the table must say so too
                led.dirty, led._changed[tid] = True, None
            led._rows[tid], led._state[tid] = row, t
            led._counts[row["status"]] = led._counts.get(row["status"], 0) + 1
            ran = row["epochs_run"]
            for e in sorted(history.get(tid, ()), key=lambda e: _count(e["epoch"])):
                if _count(e["epoch"]) <= ran:
                    led._push(t, _count(e["epoch"]), {k: _plain(v) for k, v in e.items()})
            top = t.marks[-1] if t.marks else None
            if ran > 0 and (top is None or top.epoch < ran):  # epochs missing: the row's summary on top
                t.marks.append(_Mark(ran, row["compute_s"], real_number(row.get(f"best_{metric}")), row["best_epoch"],
                                     exact=False))
            elif top is not None:  # the epoch history is the record: keep the row consistent with it
                row.update({f"best_{metric}": top.best, "best_epoch": top.best_epoch, "compute_s": top.compute})
        return led

    # -- internals --
    def _get(self, tid: str, columns: dict | None = None) -> tuple[dict, _Trial]:
        """The trial's row and state, created (pending) if new; `columns` fill fields the row lacks."""
        self.dirty = True
        self._changed[tid] = None
        if tid not in self._rows:
            row = {"trial_id": tid, "status": "pending", "error": None, "epochs_run": 0, "retries": 0}
            row.update({k: v for k, v in (columns or {}).items() if k not in _OWN})
            row.update(wall_s=0.0, compute_s=0.0)
            self._rows[tid], self._state[tid] = row, _Trial()
            self._counts["pending"] += 1
        else:
            for k, v in (columns or {}).items():
                if k not in _OWN:
                    self._rows[tid].setdefault(k, v)
        return self._rows[tid], self._state[tid]

    def _push(self, t: _Trial, epoch: int, metrics: dict) -> _Mark:
        """Add one epoch's report to the trial's mark stack (superseding marks >= epoch); returns the new top."""
        prev = self._rollback(t, epoch)
        value, best, best_epoch = real_number(metrics.get(self.metric)), prev.best, prev.best_epoch
        if value is not None and (best is None or (value > best if self.mode == "max" else value < best)):
            best, best_epoch = value, epoch  # strictly better only: a tie keeps the earlier epoch
        compute = prev.compute + max(real_number(metrics.get("epoch_time")) or 0.0, 0.0)
        t.marks.append(_Mark(epoch, compute, best, best_epoch))
        return t.marks[-1]

    @staticmethod
    def _rollback(t: _Trial, epoch: int) -> _Mark:
        """Pop the marks a report at `epoch` supersedes; return the summary of what is left (amortised O(1))."""
        while t.marks and t.marks[-1].epoch >= epoch:
            m = t.marks.pop()
            if not m.exact:  # unknown epochs inside: estimate the summary up to epoch - 1
                base = t.marks[-1] if t.marks else _Mark(0, 0.0, None, None)
                keep = epoch - 1 - base.epoch
                if keep > 0:
                    share = keep / (m.epoch - base.epoch)
                    inside = m.best_epoch is not None and m.best_epoch <= epoch - 1
                    t.marks.append(_Mark(epoch - 1, base.compute + (m.compute - base.compute) * share,
                                         m.best if inside else base.best,
                                         m.best_epoch if inside else base.best_epoch, exact=False))
        return t.marks[-1] if t.marks else _Mark(0, 0.0, None, None)

    def _set_status(self, tid: str, status: str) -> None:
        row = self._rows[tid]
        self._counts[row["status"]] -= 1
        self._counts[status] = self._counts.get(status, 0) + 1
        row["status"] = status
        self.dirty = True
        self._changed[tid] = None

    def _wall(self, t: _Trial) -> float:
        return t.wall + (self.clock() - t.started if t.started is not None else 0.0)

    def _close(self, row: dict, t: _Trial) -> None:
        """End the current run segment: its time joins the trial's wall time."""
        t.wall = self._wall(t)
        t.started = None
        row["wall_s"] = t.wall


def _count(v: Any, default: int | None = 0) -> int | None:
    """A saved count (epochs, retries) as an int; `default` for a missing or non-numeric value."""
    f = finite(_plain(v))
    return default if f is None else int(f)


def _seconds(v: Any) -> float:
    """A saved duration; 0 for a missing, non-numeric or negative value."""
    return max(finite(_plain(v)) or 0.0, 0.0)


def _records(rows: Any) -> list[dict]:
    """A list of dicts from a list of dicts, a DataFrame, or None."""
    if rows is None:
        return []
    if hasattr(rows, "to_dict"):
        return rows.to_dict("records")
    return list(rows)
