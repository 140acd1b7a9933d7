"""hier_tl.hpo: Optuna study rebuilt from the sweep tables, HPO panels, seen-vs-novel Pareto front."""
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hier_tl import hpo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "lr": {"loguniform": [1e-4, 1e-1]},
    "backbone": {"choice": ["resnet18", "effnet_lite0"]},
    "mixup_alpha": {"uniform": [0.0, 0.4]},
    "batch_size": {"choice": [32, 64]},
    "warmup": {"randint": [0, 3]},
    "wd": {"quniform": [0.0, 0.01, 0.001]},
    "threshold+novelty_score": {"choice": [["0.6", "msp"], ["tpr:0.95", "energy"]]},
}
COMPOSITE = ["('0.6', 'msp')", "('tpr:0.95', 'energy')"]


def _sweep(statuses, n_epochs=3, seed=0, backbone=None):
    """Hand-made trials/epochs tables: objective rises with lr, final = last epoch's value."""
    rng = np.random.default_rng(seed)
    trows, erows = [], []
    for i, status in enumerate(statuses):
        tid = f"t{i:02d}"
        cfg = {"lr": float(10 ** rng.uniform(-4, -1)),
               "backbone": backbone or ["resnet18", "effnet_lite0"][i % 2],
               "mixup_alpha": float(rng.uniform(0, 0.4)), "batch_size": [32, 64][i // 2 % 2],
               "warmup": int(i % 3), "wd": round(0.001 * (i % 5), 3),
               "threshold": ["0.6", "tpr:0.95"][i % 2], "novelty_score": ["msp", "energy"][i % 2]}
        ran = 0 if status == "pending" else n_epochs
        curve = [0.3 + 0.1 * e + 0.05 * math.log10(cfg["lr"] * 1e4) for e in range(ran)]
        erows += [{"trial_id": tid, "epoch": e, "objective": v, **cfg} for e, v in enumerate(curve)]
        final = curve[-1] if curve and status not in ("errored",) else np.nan
        trows.append({"trial_id": tid, "status": status, "epochs_run": ran, **cfg,
                      "final_objective": final, "best_objective": max(curve, default=np.nan)})
    return pd.DataFrame(trows), pd.DataFrame(erows)


def _study(statuses, **kw):
    trials, epochs = _sweep(statuses, **kw)
    return hpo.build_study(trials, epochs, SPACE, "objective", "max")


def _assert_clean_pngs(out_dir, result):
    """Drawn panels are real PNGs; nothing empty or temporary is left in out_dir."""
    for title, v in result.items():
        if v.startswith("not drawn: "):
            assert "\n" not in v and len(v) > len("not drawn: ")
        else:
            with open(out_dir / v, "rb") as f:
                assert f.read(8) == PNG_MAGIC, title
    for name in os.listdir(out_dir):
        assert os.path.getsize(out_dir / name) > 0, name
        assert name.endswith(".png") and not name.startswith("."), name


# ----------------------------------------------------------------------------- build_study
def test_study_has_one_trial_per_row_with_mapped_states_and_values():
    statuses = ["completed", "stopped", "errored", "running", "pending", "interrupted",
                "completed"]
    trials, epochs = _sweep(statuses)
    trials.loc[6, "final_objective"] = np.nan  # completed but no finite value
    study = hpo.build_study(trials, epochs, SPACE, "objective", "max")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.user_attrs["trial_id"] for t in study.trials] == list(trials["trial_id"])
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING,
        TrialState.WAITING, TrialState.FAIL, TrialState.FAIL]
    for t, (_, row) in zip(study.trials, trials.iterrows()):
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(row["final_objective"])
        else:
            assert t.value is None
    scored = trials[trials["status"].isin(["completed", "stopped"])]
    assert study.best_trial.user_attrs["trial_id"] == scored.loc[
        scored["final_objective"].idxmax(), "trial_id"]
    assert hpo.build_study(trials, epochs, SPACE, "objective", "min").direction \
        == optuna.study.StudyDirection.MINIMIZE


def test_distributions_follow_the_space_and_params_round_trip():
    trials, epochs = _sweep(["completed"] * 4)
    t = hpo.build_study(trials, epochs, SPACE, "objective", "max").trials
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
    trials, epochs = _sweep(["completed"])
    trials["wd"] = 0.002
    t = hpo.build_study(trials, epochs, space, "objective", "max").trials[0]
    assert t.distributions["wd"] == FloatDistribution(0.0005, 0.01)
    assert t.params["wd"] == pytest.approx(0.002)


def test_intermediate_values_equal_the_epochs_metric():
    trials, epochs = _sweep(["completed", "running", "errored"], n_epochs=4)
    epochs = epochs[~((epochs.trial_id == "t01") & (epochs.epoch == 3))]  # running: 3 epochs
    study = hpo.build_study(trials, epochs, SPACE, "objective", "max")
    for t in study.trials:
        mine = epochs[epochs.trial_id == t.user_attrs["trial_id"]]
        assert t.intermediate_values == pytest.approx(dict(zip(mine.epoch, mine.objective)))
    assert len(study.trials[1].intermediate_values) == 3


def test_missing_or_out_of_range_params_are_left_out_not_fatal():
    trials, epochs = _sweep(["completed"] * 3)
    trials.loc[0, "mixup_alpha"] = np.nan
    trials.loc[1, "lr"] = 5.0  # outside the loguniform bounds
    trials.loc[2, "backbone"] = None
    trials = trials.drop(columns=["novelty_score"])  # composite's second column is missing
    study = hpo.build_study(trials, epochs, SPACE, "objective", "max")
    assert len(study.trials) == 3
    assert "mixup_alpha" not in study.trials[0].params and "lr" in study.trials[0].params
    assert "lr" not in study.trials[1].params
    assert "backbone" not in study.trials[2].params
    assert all("threshold+novelty_score" not in t.params for t in study.trials)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


# ----------------------------------------------------------------------------- draw_hpo_plots
def test_normal_sweep_draws_four_valid_pngs(tmp_path):
    study = _study(["completed"] * 8 + ["stopped", "errored", "running"])
    out = hpo.draw_hpo_plots(study, str(tmp_path))
    assert out == {"Hyperparameter importance": "hpo_importance.png",
                   "Parallel coordinates": "hpo_parallel.png",
                   "Optimization history": "hpo_history.png",
                   "Intermediate values": "hpo_intermediate.png"}
    _assert_clean_pngs(tmp_path, out)
    assert sorted(os.listdir(tmp_path)) == sorted(out.values())
    assert plt.get_fignums() == []  # every figure closed


def test_importance_is_deterministic():
    study = _study(["completed"] * 10)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    params = hpo._varying_params(done)
    runs = [optuna.importance.get_param_importances(
        study, evaluator=hpo._importance_evaluator(), params=params) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("case, drawn", [
    ("zero trials", set()),
    ("all errored", set()),
    ("one completed", {"Parallel coordinates", "Optimization history", "Intermediate values"}),
    ("constant params", {"Parallel coordinates", "Optimization history", "Intermediate values"}),
    ("no intermediate values", {"Hyperparameter importance", "Parallel coordinates",
                                "Optimization history"}),
])
def test_edge_cases_give_reasons_not_errors(tmp_path, case, drawn):
    if case == "zero trials":
        study = hpo.build_study(pd.DataFrame(columns=["trial_id", "status"]), None, SPACE,
                                "objective", "max")
    elif case == "all errored":
        study = _study(["errored"] * 3)
    elif case == "one completed":
        study = _study(["completed", "errored"])
    elif case == "constant params":  # only lr varies: importance needs 2 varying parameters
        trials, epochs = _sweep(["completed"] * 5, backbone="resnet18")
        for col in ["mixup_alpha", "batch_size", "warmup", "wd", "threshold", "novelty_score"]:
            trials[col] = trials[col].iloc[0]
        study = hpo.build_study(trials, epochs, SPACE, "objective", "max")
    else:
        trials, _ = _sweep(["completed"] * 6)
        study = hpo.build_study(trials, None, SPACE, "objective", "max")
    (tmp_path / "hpo_importance.png").write_bytes(b"stale")  # from an earlier run
    out = hpo.draw_hpo_plots(study, str(tmp_path))
    assert {k for k, v in out.items() if not v.startswith("not drawn: ")} == drawn
    assert len(out) == 4
    _assert_clean_pngs(tmp_path, out)
    assert (tmp_path / "hpo_importance.png").exists() == ("Hyperparameter importance" in drawn)
    if case == "constant params":
        assert "fewer than 2 parameters vary" in out["Hyperparameter importance"]
    if case == "all errored":
        assert "3 fail" in out["Optimization history"]


# ----------------------------------------------------------------------------- pareto_front
def _thresholds(points, level="super", epoch=1):
    """One thresholds row per (trial, seen, novel) point at ``epoch``; the other level is 0.5."""
    other = "sub" if level == "super" else "super"
    return pd.DataFrame([{"trial_id": tid, "epoch": epoch, "score": "msp", "threshold": str(i),
                          f"seen_{level}_acc": s, f"novel_{level}_acc": n,
                          f"seen_{other}_acc": 0.5, f"novel_{other}_acc": 0.5}
                         for i, (tid, s, n) in enumerate(points)])


HAND = [("a", 0.9, 0.2), ("a", 0.8, 0.5), ("b", 0.7, 0.5), ("b", 0.6, 0.8), ("c", 0.6, 0.7),
        ("c", 0.5, 0.3), ("c", 0.95, np.nan)]


@pytest.mark.parametrize("level", ["super", "sub"])
def test_pareto_flags_exactly_the_non_dominated_points(level):
    final = _thresholds(HAND, level, epoch=2)
    early = _thresholds([("a", 0.99, 0.99), ("b", 0.99, 0.99)], level, epoch=0)  # not final
    front = hpo.pareto_front(pd.concat([early, final], ignore_index=True), level)
    assert len(front) == 6 and (front["epoch"] == 2).all()  # NaN novel and epoch 0 dropped
    pts = {(r[f"seen_{level}_acc"], r[f"novel_{level}_acc"]): r for _, r in front.iterrows()}
    on = {k for k, r in pts.items() if r["pareto"]}
    assert on == {(0.9, 0.2), (0.8, 0.5), (0.6, 0.8)}
    assert {k: pts[k]["front_rank"] for k in on} == {(0.6, 0.8): 1, (0.8, 0.5): 2, (0.9, 0.2): 3}
    assert front.loc[~front["pareto"], "front_rank"].isna().all()


def test_pareto_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    pts = [(f"t{i % 7}", *rng.integers(0, 6, 2) / 5) for i in range(80)]
    front = hpo.pareto_front(_thresholds(pts), "super")
    s, n = front["seen_super_acc"].to_numpy(), front["novel_super_acc"].to_numpy()
    dominated = [((s >= s[i]) & (n >= n[i]) & ((s > s[i]) | (n > n[i]))).any()
                 for i in range(len(s))]
    assert front["pareto"].tolist() == [not d for d in dominated]
    ranks = front.loc[front["pareto"]].sort_values("front_rank")
    assert ranks["front_rank"].tolist() == list(range(1, len(ranks) + 1))
    assert ranks["seen_super_acc"].is_monotonic_increasing


def test_pareto_without_novel_points_is_an_empty_frame_with_columns():
    df = _thresholds([("a", 0.9, np.nan), ("b", 0.8, np.nan)])
    front = hpo.pareto_front(df, "super")
    assert front.empty and {"pareto", "front_rank", "seen_super_acc"} <= set(front.columns)
    assert hpo.pareto_front(pd.DataFrame(), "sub").empty
    with pytest.raises(ValueError):
        hpo.pareto_front(df, "species")


# ----------------------------------------------------------------------------- seen vs novel
def _two_levels(no_novel_super=False):
    df = _thresholds(HAND[:-1], "super").drop(columns=["seen_sub_acc", "novel_sub_acc"])
    df["seen_sub_acc"] = [0.3, 0.4, 0.5, 0.2, 0.1, 0.6]
    df["novel_sub_acc"] = [0.6, 0.5, 0.2, 0.7, 0.1, 0.1]
    if no_novel_super:
        df["novel_super_acc"] = np.nan
    return df


def test_seen_vs_novel_writes_png_with_chosen_star(tmp_path):
    df, path = _two_levels(), tmp_path / "seen_vs_novel.png"
    chosen = {"trial_id": "b", "score": "msp", "threshold": "3"}
    assert hpo.plot_seen_vs_novel(df, chosen, str(path)) is None
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path) == ["seen_vs_novel.png"]
    fig, ax = plt.subplots()
    try:
        assert hpo._draw_level(ax, df, chosen, "super")
        assert "chosen" in ax.get_legend_handles_labels()[1]
        assert any("msp @ 3" in t.get_text() and "b" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


def test_seen_vs_novel_panel_without_novel_images_says_why(tmp_path):
    df, path = _two_levels(no_novel_super=True), tmp_path / "svn.png"
    assert hpo.plot_seen_vs_novel(df, {"trial_id": "a", "score": "msp", "threshold": "0"},
                                  str(path)) is None
    assert path.read_bytes()[:8] == PNG_MAGIC
    fig, ax = plt.subplots()
    try:
        assert not hpo._draw_level(ax, df, None, "super")
        assert [t.get_text() for t in ax.texts] == ["validation holds no novel superclass images"]
    finally:
        plt.close(fig)
    nothing = df.assign(novel_sub_acc=np.nan)
    reason = hpo.plot_seen_vs_novel(nothing, None, str(tmp_path / "none.png"))
    assert "no novel superclass" in reason and "no novel subclass" in reason
    assert sorted(os.listdir(tmp_path)) == ["svn.png"]
    assert plt.get_fignums() == []
