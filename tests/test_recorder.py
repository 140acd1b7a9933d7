"""sweep.recorder: what every report of a sweep leaves in the results folder, and what the terminal says when a
trial fails. Tune's hooks are driven directly (no Ray cluster), as Tune would call them."""

import json
from types import SimpleNamespace

import pandas as pd

from hier_tl.results.storage import Storage
from hier_tl.sweep.recorder import Recorder, result_rows
from hier_tl.sweep.sweep_config import SweepConfig
from hier_tl.train.train_config import TrainConfig, config_columns


def _result(epoch: int, objective: float) -> dict:
    rows = [{"score": "msp", "threshold": "0.5", "seen_super_acc": 0.9, "novel_super_acc": None, "objective": 0.7}]
    return {"epoch": epoch, "objective": objective, "epoch_time": 1.0, "train_loss": 0.3, "node": "n",
            "node_id": "abc", "device": "cpu", "training_iteration": epoch, "thresholds_json": json.dumps(rows)}


def test_every_row_carries_the_resolved_config_protocol_seed_and_code_version():
    ctx = config_columns(TrainConfig(seed=7, holdout_subclasses=2, threshold="tpr:0.9"))
    metrics, epoch, rows = result_rows("t1", _result(3, 0.5), ctx)
    assert metrics == {"epoch": 3, "objective": 0.5, "epoch_time": 1.0, "train_loss": 0.3}
    for row in (epoch, *rows):
        assert row["trial_id"] == "t1" and row["seed"] == 7 and row["protocol"] == "2 sub held out"
        assert "git_commit" in row and "hier_tl_version" in row
    assert rows[0]["trial_threshold"] == "tpr:0.9" and rows[0]["threshold"] == "0.5"  # the row's own threshold


def test_reports_reach_the_tables_and_a_failed_trial_is_one_line_naming_its_traceback(tmp_path, capsys):
    sweep = SweepConfig(name="r", storage=str(tmp_path), space={"lr": {"loguniform": [1e-4, 1e-2]}},
                        base={"epochs": 2, "holdout_subclasses": 1})
    rec = Recorder(Storage(str(tmp_path), "r"), sweep, progress_every=1e9, heartbeat=1e9)
    rec.setup()
    ok = SimpleNamespace(trial_id="ok", config={"lr": 1e-3}, path=str(tmp_path / "ok"), error_file=None)
    err_file = tmp_path / "error.txt"
    err_file.write_text("Traceback (most recent call last):\n  ...\nValueError: the loss was NaN\n")
    bad = SimpleNamespace(trial_id="bad", config={"lr": 1e-2}, path=str(tmp_path / "bad"), error_file=str(err_file))
    for t in (ok, bad):
        rec.on_trial_start(0, [ok, bad], t)
    for epoch, objective in ((1, 0.4), (2, 0.6)):
        rec.on_trial_result(0, [ok, bad], ok, _result(epoch, objective))
    rec.on_trial_complete(0, [ok, bad], ok)
    rec.on_trial_error(0, [ok, bad], bad)
    rec.on_experiment_end([ok, bad])
    out = capsys.readouterr().out.strip().splitlines()  # progress lines, and one line for the failure
    assert [line for line in out if "failed" in line or "Traceback" in line] == [
        f"trial bad failed: ValueError: the loss was NaN (traceback: {err_file})"]
    trials = Storage(str(tmp_path), "r").read("trials").set_index("trial_id")
    assert trials.loc["ok", "status"] == "completed" and trials.loc["ok", "final_objective"] == 0.6
    assert trials.loc["bad", "status"] == "errored" and trials.loc["bad", "error"] == "ValueError: the loss was NaN"
    assert trials.loc["ok", "protocol"] == "1 sub held out"
    epochs = Storage(str(tmp_path), "r").read("epochs")
    assert list(epochs[epochs.trial_id == "ok"].sort_values("epoch").objective) == [0.4, 0.6]
    assert isinstance(Storage(str(tmp_path), "r").read("thresholds"), pd.DataFrame)
