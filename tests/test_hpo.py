"""analysis.hpo: Optuna's HPO panels drawn from a study rebuilt from the sweep tables."""
import os

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_tables import SPACE, assert_clean_pngs, make_study, make_sweep

from hier_tl.analysis import hpo
from hier_tl.sweep import studies


# ----------------------------------------------------------------------------- draw_hpo_plots
def test_normal_sweep_draws_four_valid_pngs(tmp_path):
    study = make_study(["completed"] * 8 + ["stopped", "errored", "running"])
    out = hpo.draw_hpo_plots(study, str(tmp_path))
    assert out == {"Hyperparameter importance": "hpo_importance.png",
                   "Parallel coordinates": "hpo_parallel.png",
                   "Optimization history": "hpo_history.png",
                   "Intermediate values": "hpo_intermediate.png"}
    assert_clean_pngs(tmp_path, out)
    assert sorted(os.listdir(tmp_path)) == sorted(out.values())
    assert plt.get_fignums() == []  # every figure closed


def test_an_asha_sweep_counts_its_stopped_trials_in_every_panel(tmp_path):
    """ASHA stops most trials; their final values are measurements (the state table in studies.py), so
    importance, history and parallel coordinates are drawn from them rather than from the one survivor."""
    study = make_study(["completed"] + ["stopped"] * 4 + ["errored"])
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    out = hpo.draw_hpo_plots(study, str(tmp_path))
    assert not [v for v in out.values() if v.startswith("not drawn: ")], out
    assert_clean_pngs(tmp_path, out)


def test_importance_is_deterministic():
    study = make_study(["completed"] * 10)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    params = hpo._varying_params(done)
    runs = [optuna.importance.get_param_importances(
        study, evaluator=hpo._importance_evaluator(), params=params) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("case, drawn", [
    ("zero trials", set()),
    ("all errored", set()),
    ("one completed", {"Optimization history", "Intermediate values"}),  # parallel coordinates need 5 configs
    ("constant params", {"Parallel coordinates", "Optimization history", "Intermediate values"}),
    ("no intermediate values", {"Hyperparameter importance", "Parallel coordinates",
                                "Optimization history"}),
])
def test_edge_cases_give_reasons_not_errors(tmp_path, case, drawn):
    if case == "zero trials":
        study = studies.build_study(pd.DataFrame(columns=["trial_id", "status"]), None, SPACE,
                                    "objective", "max")
    elif case == "all errored":
        study = make_study(["errored"] * 3)
    elif case == "one completed":
        study = make_study(["completed", "errored"])
    elif case == "constant params":  # only lr varies: importance needs 2 varying parameters
        trials, epochs = make_sweep(["completed"] * 5, backbone="resnet18")
        for col in ["mixup_alpha", "batch_size", "warmup", "wd", "threshold", "novelty_score"]:
            trials[col] = trials[col].iloc[0]
        study = studies.build_study(trials, epochs, SPACE, "objective", "max")
    else:
        trials, _ = make_sweep(["completed"] * 6)
        study = studies.build_study(trials, None, SPACE, "objective", "max")
    (tmp_path / "hpo_importance.png").write_bytes(b"stale")  # from an earlier run
    out = hpo.draw_hpo_plots(study, str(tmp_path))
    assert {k for k, v in out.items() if not v.startswith("not drawn: ")} == drawn
    if case == "one completed":
        assert out["Parallel coordinates"].startswith("not drawn: 1 distinct configuration(s) completed")
    assert len(out) == 4
    assert_clean_pngs(tmp_path, out)
    assert (tmp_path / "hpo_importance.png").exists() == ("Hyperparameter importance" in drawn)
    if case == "constant params":
        assert "fewer than 2 parameters vary" in out["Hyperparameter importance"]
    if case == "all errored":
        assert "3 fail" in out["Optimization history"]
