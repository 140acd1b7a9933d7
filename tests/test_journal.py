"""sweep.journal: the live Optuna journal that optuna-dashboard shows, written from the recorder's hooks.

The fast tests drive the Recorder's Tune hooks without Ray (a trial is what Tune hands a callback: an id, a
sampled config, a folder) and read the journal file the way the dashboard does, with a fresh
JournalStorage each time. The slow test runs a real sweep and asks the real optuna-dashboard."""

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hier_tl.core.config import from_dict
from hier_tl.results.storage import Storage
from hier_tl.sweep.journal import FILE
from hier_tl.sweep.recorder import Recorder
from hier_tl.sweep.sweep_config import SweepConfig

SPEC = {
    "name": "j", "data": "synthetic", "synthetic": {"seed": 1, "subs_per_super": 2, "per_class": 12},
    "base": {"backbone": "cnn_tiny", "epochs": 3, "holdout_subclasses": 1},
    "space": {"lr": {"loguniform": [1e-3, 1e-2]}, "depth": {"choice": ["full", "partial"]}},
    "scheduler": {"kind": "asha", "metric": "objective", "mode": "max"},
    "num_samples": 4, "novelty": {"scores": ["msp"], "thresholds": [0.5]},
}


@pytest.fixture
def sweep(tmp_path) -> SweepConfig:
    (tmp_path / "results" / "j").mkdir(parents=True)
    return from_dict(SweepConfig, {**SPEC, "storage": str(tmp_path / "results")})


def recorder(sweep: SweepConfig) -> Recorder:
    """A recorder as Tune starts it (a resumed sweep's is a new one on the same folder)."""
    rec = Recorder(Storage(sweep.storage, sweep.name), sweep, flush_seconds=0.0, progress_every=1e9,
                   heartbeat=1e9)
    rec.setup()
    return rec


def trial(tid: str, lr: float = 0.005, depth: str = "full") -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"lr": lr, "depth": depth}, path=f"/ray/{tid}", error_file=None)


def seen(sweep: SweepConfig) -> dict[str, optuna.trial.FrozenTrial]:
    """The journal's trials by Tune trial id, read afresh as optuna-dashboard reads them."""
    journal = JournalStorage(JournalFileBackend(str(Path(sweep.storage) / sweep.name / FILE)))
    study = optuna.load_study(study_name=sweep.name, storage=journal)
    trials = study.get_trials()
    by_id = {t.user_attrs["trial_id"]: t for t in trials}
    assert len(by_id) == len(trials), "a Tune trial twice in the journal"
    return by_id


def report(rec: Recorder, t, epoch: int, objective: float) -> None:
    rec.on_trial_result(0, [], t, {"epoch": epoch, "objective": objective})


@pytest.mark.parametrize("ending, curve, state, value", [
    ("complete", [0.4, 0.5, 0.6], TrialState.COMPLETE, 0.6),       # every planned epoch
    ("complete", [0.4], TrialState.PRUNED, 0.4),                    # ASHA stopped it after 1 of 3
    ("complete", [0.4, math.nan], TrialState.PRUNED, None),         # stopped on a NaN: pruned, no value
    ("error", [0.4, 0.5], TrialState.FAIL, None),
])
def test_a_trial_runs_with_one_value_per_epoch_then_takes_its_final_state(sweep, ending, curve, state, value):
    rec, t = recorder(sweep), trial("a", lr=0.002, depth="partial")
    rec.on_trial_start(0, [], t)
    a = seen(sweep)["a"]
    assert a.state == TrialState.RUNNING and a.intermediate_values == {}
    assert a.params == {"lr": 0.002, "depth": "partial"} and a.user_attrs["status"] == "running"
    assert a.datetime_start is not None and a.datetime_complete is None
    for epoch, v in enumerate(curve, 1):
        report(rec, t, epoch, v)
        a = seen(sweep)["a"]
        assert a.state == TrialState.RUNNING
        assert a.intermediate_values == {e: v for e, v in enumerate(curve[:epoch], 1) if not math.isnan(v)}
    getattr(rec, f"on_trial_{ending}")(0, [], t)
    a = seen(sweep)["a"]
    assert a.state == state and a.value == value
    assert a.intermediate_values == {e: v for e, v in enumerate(curve, 1) if not math.isnan(v)}
    assert a.duration.total_seconds() > 0
    assert a.user_attrs["status"] == rec.ledger.row("a")["status"]
    assert a.user_attrs["wall_s"] == pytest.approx(rec.ledger.row("a")["wall_s"])
    study = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(
        str(Path(sweep.storage) / "j" / FILE))))
    assert study.metric_names == ["objective"] and study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_retried_trial_waits_then_runs_on_as_the_same_journal_trial(sweep):
    rec, t = recorder(sweep), trial("a")
    rec.on_trial_start(0, [], t)
    report(rec, t, 1, 0.4)
    rec.on_trial_recover(0, [], t)
    a = seen(sweep)["a"]
    assert (a.state, a.user_attrs["status"], a.intermediate_values) == (TrialState.WAITING, "pending", {1: 0.4})
    rec.on_trial_start(0, [], t)
    assert seen(sweep)["a"].state == TrialState.RUNNING
    for epoch, v in ((2, 0.5), (3, 0.6)):
        report(rec, t, epoch, v)
    rec.on_trial_complete(0, [], t)
    a = seen(sweep)["a"]
    assert (a.number, a.state, a.value, a.intermediate_values) == (0, TrialState.COMPLETE, 0.6,
                                                                  {1: 0.4, 2: 0.5, 3: 0.6})


def _snapshot(sweep):
    return {tid: (t.number, t.state, t.value, t.intermediate_values, t.datetime_start, t.datetime_complete)
            for tid, t in seen(sweep).items()}


@pytest.mark.parametrize("how", ["sweep ended (Ctrl-C)", "driver killed"])
def test_resume_continues_interrupted_trials_and_adds_nothing_twice(sweep, how):
    rec = recorder(sweep)
    a, b, c = trial("a"), trial("b", lr=0.008), trial("c", lr=0.001)
    for t in (a, b, c):
        rec.on_trial_start(0, [], t)
    for epoch, v in ((1, 0.4), (2, 0.5), (3, 0.6)):
        report(rec, a, epoch, v)
    report(rec, b, 1, 0.45)
    report(rec, c, 1, 0.2)
    rec.on_trial_complete(0, [], a)
    rec.on_trial_complete(0, [], c)  # ASHA: 1 epoch of 3
    if how == "sweep ended (Ctrl-C)":
        rec.on_experiment_end([])
    else:  # killed: nothing more is written; the journal still says b runs
        assert seen(sweep)["b"].state == TrialState.RUNNING
    before = _snapshot(sweep)

    rec = recorder(sweep)  # --resume
    after = _snapshot(sweep)
    assert after["b"][1] == TrialState.WAITING and seen(sweep)["b"].user_attrs["status"] == "interrupted"
    assert {k: v for k, v in after.items() if k != "b"} == {k: v for k, v in before.items() if k != "b"}
    assert after["b"][3] == {1: 0.45}
    rec.on_trial_start(0, [], b)  # Tune restarts b from its epoch-1 checkpoint
    for epoch, v in ((2, 0.55), (3, 0.65)):
        report(rec, b, epoch, v)
    rec.on_trial_complete(0, [], b)
    rec.on_experiment_end([])
    done = seen(sweep)
    assert (done["b"].number, done["b"].state, done["b"].value) == (1, TrialState.COMPLETE, 0.65)
    assert done["b"].intermediate_values == {1: 0.45, 2: 0.55, 3: 0.65}
    assert [done[k].state for k in "ac"] == [TrialState.COMPLETE, TrialState.PRUNED]

    final = _snapshot(sweep)
    recorder(sweep).on_experiment_end([])  # resuming a finished sweep changes nothing
    assert _snapshot(sweep) == final


def test_finished_trials_the_journal_missed_are_added_dated_by_their_epochs(sweep):
    rec = recorder(sweep)
    a, c = trial("a"), trial("c", lr=0.001)
    for t, curve in ((a, [0.4, 0.5, 0.6]), (c, [0.2])):
        rec.on_trial_start(0, [], t)
        for epoch, v in enumerate(curve, 1):
            time.sleep(0.01)
            report(rec, t, epoch, v)
        rec.on_trial_complete(0, [], t)
    rows = {r["trial_id"]: r for r in rec.ledger.rows()}
    (Path(sweep.storage) / "j" / FILE).unlink()  # e.g. a sweep from before the journal existed

    recorder(sweep)
    got = seen(sweep)
    epochs = pd.read_parquet(Path(sweep.storage) / "j" / "epochs")
    for tid, state, value in (("a", TrialState.COMPLETE, 0.6), ("c", TrialState.PRUNED, 0.2)):
        t = got[tid]
        assert (t.state, t.value, t.user_attrs["status"]) == (state, value, rows[tid]["status"])
        last = datetime.fromtimestamp(epochs[epochs.trial_id == tid].time.max())
        assert abs((t.datetime_complete - last).total_seconds()) < 1e-3
        assert t.duration.total_seconds() == pytest.approx(rows[tid]["wall_s"], abs=1e-3)
        assert t.duration.total_seconds() > 0


def test_a_journal_that_cannot_be_written_is_switched_off_not_fatal(sweep, capsys):
    (Path(sweep.storage) / "j" / FILE).mkdir()  # not a file: optuna cannot open it
    rec, t = recorder(sweep), trial("a")
    rec.on_trial_start(0, [], t)
    report(rec, t, 1, 0.4)
    rec.on_trial_complete(0, [], t)
    err = capsys.readouterr().err
    assert err.count("Optuna journal (live dashboard) is off") == 1
    assert rec.ledger.row("a")["status"] == "stopped"  # the sweep's own record goes on


# ----------------------------------------------------------------------------- optuna-dashboard, for real
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _study(port: int) -> dict | None:
    """The dashboard's view of the sweep's study, or None before the journal holds it (or the server is up)."""
    try:
        found = [s for s in _get(port, "/api/studies")["study_summaries"] if s["study_name"] == "d"]
        return _get(port, f"/api/studies/{found[0]['study_id']}") if found else None
    except OSError:
        return None


EPOCHS = 24  # long enough for the dashboard to start and see the first trial running on a loaded machine


@pytest.mark.slow
def test_optuna_dashboard_shows_running_then_pruned_trials_with_times_and_the_metric_name(tmp_path):
    """lr grid [0.01, 0.001], one trial at a time, ASHA on the reported learning rate (constant schedule): the
    second trial is stopped after its first epoch whatever the training does."""
    spec = {**SPEC, "name": "d", "storage": str(tmp_path / "results"), "num_samples": 1, "max_concurrent": 1,
            "synthetic": {"seed": 1, "subs_per_super": 2, "per_class": 24, "test_per_class": 2, "size": 32},
            "base": {**SPEC["base"], "epochs": EPOCHS, "batch_size": 16, "schedule": "constant", "warmup_epochs": 0},
            "space": {"lr": {"grid": [0.01, 0.001]}}, "search": {"algo": "grid"},
            "scheduler": {"kind": "asha", "metric": "current_lr", "mode": "max", "grace_period": 1,
                          "reduction_factor": 2}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    port, journal = _free_port(), tmp_path / "results" / "d" / FILE
    sweep = subprocess.Popen([sys.executable, "-m", "hier_tl.cli", "sweep", str(tmp_path / "s.yaml")],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dashboard = None
    try:
        running = None  # a trial the dashboard showed running, with an epoch's value
        while sweep.poll() is None:
            if dashboard is None and journal.exists():
                dashboard = subprocess.Popen(
                    [str(Path(sys.executable).with_name("optuna-dashboard")), str(journal), "--host", "127.0.0.1",
                     "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            live = _study(port) if dashboard is not None and running is None else None
            running = running or next((t for t in (live or {}).get("trials", [])
                                       if t["state"] == "Running" and t["intermediate_values"]), None)
            time.sleep(0.3)
        out = sweep.stdout.read()
        assert sweep.returncode == 0, out
        assert running is not None, "the dashboard never showed a running trial with its epochs"
        time.sleep(2.5)  # the dashboard caches a study's trials for 2 s
        study = _study(port)
    finally:
        for proc in (sweep, dashboard):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = pd.read_parquet(tmp_path / "results" / "d" / "trials.parquet").set_index("trial_id")
    assert study["objective_names"] == ["current_lr"]
    by_lr = {rows.loc[{a["key"]: a["value"] for a in t["user_attrs"]}["trial_id"], "lr"]: t for t in study["trials"]}
    assert by_lr[0.01]["state"] == "Complete" and by_lr[0.01]["values"] == [0.01]
    assert by_lr[0.001]["state"] == "Pruned" and by_lr[0.001]["values"] == [0.001]
    assert [v["step"] for v in by_lr[0.01]["intermediate_values"]] == list(range(1, EPOCHS + 1))
    assert [v["step"] for v in by_lr[0.001]["intermediate_values"]] == [1]
    for t in study["trials"]:
        start, end = (datetime.fromisoformat(t[k]) for k in ("datetime_start", "datetime_complete"))
        assert (end - start).total_seconds() > 0
    assert running["number"] in {t["number"] for t in study["trials"]}
