"""What the terminal says while a sweep runs: one progress line every few seconds.

    [  312s] 4/12 trials done (3 completed, 1 stopped early), 2 running | ETA ~6 min | best objective 0.8421
    (3 sub + 1 super held out: a1b2c_00002 depth=full, lr=0.0031) | a1b2c_00004 epoch 3/8 training,
    a1b2c_00005 reference features 1,536/5,029

Trials announce their phases (`train.fit`'s progress callback, through `TuneReporter.phase`) to a small
`ProgressBoard` actor the driver starts; the line reads it together with the trial ledger, so a trial that
spends twenty minutes on reference features says so instead of "epoch 0".
"""

from __future__ import annotations

import pandas as pd

from ..results.ledger import TrialLedger
from ..results.reading import best_trial
from ..train.train_config import protocol_label


def eta_seconds(ledger: TrialLedger, planned: int, max_epochs: int) -> float | None:
    """Remaining wall time, estimated once an epoch has been timed: seconds per epoch, times the epochs still
    to run (running trials to their end; trials not started yet as long as finished trials ran on average, or
    `max_epochs` while none has finished), shared among the trials running at once. Seconds per epoch: the
    running trials' latest epochs once they have run two (the pace now), else the mean of every epoch."""
    rows = ledger.rows()
    ran = sum(int(r.get("epochs_run") or 0) for r in rows)
    compute = sum(float(r.get("compute_s") or 0.0) for r in rows)
    if ran == 0 or compute <= 0:
        return None
    recent = ledger.recent_epoch_s()
    per_epoch = sum(recent) / len(recent) if recent else compute / ran
    done = [r for r in rows if r["status"] in ("completed", "stopped", "errored")]
    per_trial = (sum(int(r.get("epochs_run") or 0) for r in done) / len(done)) if done else max_epochs
    running = [r for r in rows if r["status"] == "running"]
    left = sum(max(0, max_epochs - int(r.get("epochs_run") or 0)) for r in running)
    left += max(0, planned - len(done) - len(running)) * per_trial
    return left * per_epoch / max(1, len(running))


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def progress_line(ledger: TrialLedger, planned: int, max_epochs: int, elapsed: float, metric: str, mode: str,
                  keys: tuple[str, ...] = (), phases: dict | None = None, protocol: str | None = None) -> str:
    """The line: trials done of planned, ETA, the best trial of the decision protocol (or of each protocol
    when the sweep names none), and what each running trial is doing."""
    c, phases = ledger.counts(), phases or {}
    finished = c["completed"] + c["stopped"] + c["errored"]
    kinds = ", ".join(f"{n} {k}" for k, n in (("completed", c["completed"]), ("stopped early", c["stopped"]),
                                              ("errored", c["errored"]), ("interrupted", c["interrupted"])) if n)
    text = f"[{elapsed:6.0f}s] {finished}/{planned} trials done" + (f" ({kinds})" if kinds else "") + \
        f", {c['running']} running"
    eta = eta_seconds(ledger, planned, max_epochs)
    if eta is not None and finished < planned:
        text += f" | ETA ~{_duration(eta)}"
    text += _best(pd.DataFrame(ledger.rows()), metric, mode, keys, protocol)
    running = [_doing(r, phases.get(r["trial_id"]), max_epochs) for r in ledger.rows() if r["status"] == "running"]
    if running:
        text += " | " + ", ".join(running[:6]) + (" ..." if len(running) > 6 else "")
    return text


def _best(rows: pd.DataFrame, metric: str, mode: str, keys: tuple[str, ...], protocol: str | None) -> str:
    if rows.empty or "holdout_subclasses" not in rows:
        return ""
    labels = rows["protocol"] if "protocol" in rows and rows["protocol"].notna().all() else \
        [protocol_label(r) for r in rows.to_dict("records")]
    rows = rows.assign(_protocol=labels)
    groups = [protocol] if protocol else list(dict.fromkeys(labels))
    out = []
    for p in groups:
        b = best_trial(rows[rows._protocol == p], metric, mode)
        if b is not None:
            shown = ", ".join(f"{k}={_short(b[k])}" for k in keys if k in b)
            out.append(f"best {metric} {b[f'final_{metric}']:.4f} ({p}: {b['trial_id']}{' ' + shown if shown else ''})")
    return (" | " + "; ".join(out)) if out else ""


def _doing(row: dict, phase: tuple | None, max_epochs: int) -> str:
    """One running trial: its epoch of E, and its phase when the board knows it."""
    tid, epoch = row["trial_id"], int(row.get("epochs_run") or 0)
    if phase is None:
        return f"{tid} epoch {epoch}/{row.get('epochs') or max_epochs}"
    name, done, total, _ = phase
    if name in ("training", "evaluating"):
        return f"{tid} epoch {done}/{total} {name}"
    return f"{tid} {name}" + (f" {done:,}/{total:,}" if total else "")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
