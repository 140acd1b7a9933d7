"""predict.ensemble: the K best trials of one protocol, and `predict --ensemble K` (with --refit)."""

import pandas as pd
import pytest

from hier_tl.core.errors import SelectionError
from hier_tl.predict.ensemble import top_trials
from hier_tl.results.protocols import protocol_column


def _trials():
    rows = [("a", 0.70, 3, 1), ("b", 0.90, 3, 0), ("c", 0.80, 3, 0), ("d", float("nan"), 3, 0), ("e", 0.85, 0, 1),
            ("f", 0.60, 3, 0)]
    return pd.DataFrame([{"trial_id": t, "final_objective": v, "holdout_subclasses": s, "holdout_superclasses": h,
                          "folds": 3, "val_fraction": 0.1, "split_seed": 0} for t, v, s, h in rows])


@pytest.mark.parametrize("k, mode, protocol, want", [
    (2, "max", "3 sub held out, 3 folds", ["b", "c"]),  # best first, never a trial of another protocol (e)
    (5, "max", "3 sub held out, 3 folds", ["b", "c", "f"]),  # fewer than asked: all, without the one lacking a value
    (2, "min", "3 sub held out, 3 folds", ["f", "c"]),
    (3, "max", "1 super held out, 3 folds", ["e"]),
    (1, "max", "3 sub + 1 super held out, 3 folds", ["a"]),
])
def test_top_trials_of_one_protocol(k, mode, protocol, want):
    assert [t["trial_id"] for t in top_trials(_trials(), "objective", mode, protocol, k)] == want


def test_trials_sharing_one_trained_model_are_one_member():
    from dataclasses import fields

    from hier_tl.train.train_config import TrainConfig
    base = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    rows = [("a", 0.9, 0.001, "msp"), ("b", 0.85, 0.001, "energy"), ("c", 0.8, 0.002, "msp")]  # a, b: one model
    trials = pd.DataFrame([{**base, "trial_id": t, "final_objective": v, "lr": lr, "novelty_score": s}
                           for t, v, lr, s in rows])
    protocol = protocol_column(trials)[0]
    assert [t["trial_id"] for t in top_trials(trials, "objective", "max", protocol, 2)] == ["a", "c"]


def test_no_trial_of_the_protocol_says_so():
    with pytest.raises(SelectionError, match="no trial of protocol 'closed set'"):
        top_trials(_trials(), "objective", "max", "closed set")


@pytest.mark.slow
def test_predict_with_an_ensemble_of_refits(sweep, tmp_path, capsys):
    from hier_tl.cli import main

    results, data = sweep
    out = tmp_path / "e.csv"
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out),
                 "--ensemble", "2", "--refit"]) == 0
    printed = capsys.readouterr().out
    assert "ensemble of 2 trial(s) of protocol '1 sub held out, val 0.25'" in printed
    assert printed.count("refit: saved") == 2 and "at the trial's margin" in printed
    assert len(pd.read_csv(out)) == len(pd.read_csv(data / "test_labels.csv"))


@pytest.mark.slow
def test_the_report_scores_the_ensemble_beside_its_members_on_validation(sweep, tmp_path):
    from hier_tl import load_results
    from hier_tl.cli import main
    from hier_tl.predict.ensemble import validate_ensemble

    results, _ = sweep
    got = validate_ensemble(str(results), 2, log=lambda *a: None)
    assert list(got.model) == [*got.model[:2], "ensemble of 2"]
    trials = load_results(str(results), tables=()).trials.set_index("trial_id")
    for row in got.iloc[:2].itertuples():  # a member alone scores what its trial recorded at its last epoch
        t = trials.loc[row.model]
        assert row.objective == pytest.approx(t.final_objective, abs=1e-6)
        assert row[got.columns.get_loc("seen sub") + 1] == pytest.approx(t.final_seen_sub_acc, abs=1e-6)
    assert 0 <= got.objective.iloc[2] <= 1

    assert main(["report", str(results), "--out", str(tmp_path), "--ensemble", "2"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "## Ensemble of the 2 best trial(s) of '1 sub held out, val 0.25' on their validation images" in md
    assert "| model | objective |" in md and "| score | threshold |" in md
    assert "| ensemble of 2 |" in md and "%" in md.split("## Ensemble", 1)[1].split("\n## ", 1)[0]
    assert "Ensemble of the 2 best trial(s)" in (tmp_path / "report.html").read_text()
