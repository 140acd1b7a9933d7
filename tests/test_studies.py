"""sweep.studies: a sweep's trials as an Optuna study, rebuilt from its Parquet tables alone."""

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from sweep_tables import COMPOSITE, SPACE, make_sweep

from hier_tl.sweep import studies


def test_study_has_one_trial_per_row_with_mapped_states_and_values():
    statuses = ["completed", "stopped", "errored", "running", "pending", "interrupted",
                "completed"]
    trials, epochs = make_sweep(statuses)
    trials.loc[6, "final_objective"] = np.nan  # completed but no finite value
    study = studies.build_study(trials, epochs, SPACE, "objective", "max")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.user_attrs["trial_id"] for t in study.trials] == list(trials["trial_id"])
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING,
        TrialState.WAITING, TrialState.WAITING, TrialState.FAIL]
    assert study.metric_names == ["objective"]
    for t, (_, row) in zip(study.trials, trials.iterrows()):
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(row["final_objective"])
        else:
            assert t.value is None
    scored = trials[trials["status"].isin(["completed", "stopped"])]
    assert study.best_trial.user_attrs["trial_id"] == scored.loc[
        scored["final_objective"].idxmax(), "trial_id"]
    assert studies.build_study(trials, epochs, SPACE, "objective", "min").direction \
        == optuna.study.StudyDirection.MINIMIZE


C, P, F, R, W = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING,
                 TrialState.WAITING)


@pytest.mark.parametrize("status, value, journal, report", [
    ("completed", 0.7, (C, 0.7), (C, 0.7)),
    ("completed", None, (F, None), (F, None)),
    ("stopped", 0.4, (P, 0.4), (C, 0.4)),       # ASHA's stop: pruned live, a measurement in the report
    ("stopped", None, (P, None), (F, None)),
    ("errored", 0.5, (F, None), (F, None)),
    ("running", 0.5, (R, None), (R, None)),
    ("pending", None, (W, None), (W, None)),     # a retry, due to start again
    ("interrupted", 0.5, (W, None), (W, None)),  # waits for --resume
    ("Completed", 0.7, (C, 0.7), (C, 0.7)),
    ("", 0.7, (F, None), (F, None)),
])
def test_state_table(status, value, journal, report):
    assert studies.trial_state(status, value, stopped=TrialState.PRUNED) == journal
    assert studies.trial_state(status, value) == report


def test_stopped_trials_are_pruned_with_their_value_and_curve_when_asked():
    trials, epochs = make_sweep(["completed", "stopped", "stopped"])
    trials.loc[2, "final_objective"] = np.nan
    study = studies.build_study(trials, epochs, SPACE, "objective", "max", stopped=TrialState.PRUNED)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert study.trials[1].value == pytest.approx(trials.loc[1, "final_objective"])
    assert study.trials[2].value is None
    assert all(len(t.intermediate_values) == 3 for t in study.trials)
    assert [t.user_attrs["status"] for t in study.trials] == ["completed", "stopped", "stopped"]


def test_distributions_follow_the_space_and_params_round_trip():
    trials, epochs = make_sweep(["completed"] * 4)
    t = studies.build_study(trials, epochs, SPACE, "objective", "max").trials
    d = t[0].distributions
    assert d["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["mixup_alpha"] == FloatDistribution(0.0, 0.4)
    assert d["backbone"] == CategoricalDistribution(["resnet18", "effnet_lite0"])
    assert d["warmup"] == IntDistribution(0, 2)  # Ray's randint hi is exclusive
    assert d["wd"] == FloatDistribution(0.0, 0.01, step=0.001)
    assert d["threshold+novelty_score"] == CategoricalDistribution(COMPOSITE)
    for trial, (_, row) in zip(t, trials.iterrows()):
        assert trial.params["backbone"] == row["backbone"]
        assert trial.params["batch_size"] == row["batch_size"]
        assert type(trial.params["batch_size"]) is int
        assert trial.params["lr"] == pytest.approx(row["lr"])
        assert trial.params["warmup"] == row["warmup"]
        assert trial.params["threshold+novelty_score"] == str((row["threshold"],
                                                                row["novelty_score"]))


def test_quniform_off_grid_bounds_fall_back_to_plain_float():
    space = {"wd": {"quniform": [0.0005, 0.01, 0.001]}}
    trials, epochs = make_sweep(["completed"])
    trials["wd"] = 0.002
    t = studies.build_study(trials, epochs, space, "objective", "max").trials[0]
    assert t.distributions["wd"] == FloatDistribution(0.0005, 0.01)
    assert t.params["wd"] == pytest.approx(0.002)


def test_intermediate_values_equal_the_epochs_metric():
    trials, epochs = make_sweep(["completed", "running", "errored"], n_epochs=4)
    epochs = epochs[~((epochs.trial_id == "t01") & (epochs.epoch == 3))]  # running: 3 epochs
    study = studies.build_study(trials, epochs, SPACE, "objective", "max")
    for t in study.trials:
        mine = epochs[epochs.trial_id == t.user_attrs["trial_id"]]
        assert t.intermediate_values == pytest.approx(dict(zip(mine.epoch, mine.objective)))
    assert len(study.trials[1].intermediate_values) == 3


def test_missing_or_out_of_range_params_are_left_out_not_fatal():
    trials, epochs = make_sweep(["completed"] * 3)
    trials.loc[0, "mixup_alpha"] = np.nan
    trials.loc[1, "lr"] = 5.0  # outside the loguniform bounds
    trials.loc[2, "backbone"] = None
    trials = trials.drop(columns=["novelty_score"])  # composite's second column is missing
    study = studies.build_study(trials, epochs, SPACE, "objective", "max")
    assert len(study.trials) == 3
    assert "mixup_alpha" not in study.trials[0].params and "lr" in study.trials[0].params
    assert "lr" not in study.trials[1].params
    assert "backbone" not in study.trials[2].params
    assert all("threshold+novelty_score" not in t.params for t in study.trials)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
