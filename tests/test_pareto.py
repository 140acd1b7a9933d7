"""analysis.pareto: the seen-vs-novel operating points of every trial x score x threshold and their front."""
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sweep_tables import PNG_MAGIC

from hier_tl.analysis import pareto


@pytest.mark.parametrize("level", ["super", "sub"])
def test_pareto_flags_exactly_the_non_dominated_points(level):
    final = _thresholds(HAND, level, epoch=2)
    early = _thresholds([("a", 0.99, 0.99), ("b", 0.99, 0.99)], level, epoch=0)  # not final
    front = pareto.pareto_front(pd.concat([early, final], ignore_index=True), level)
    assert len(front) == 6 and (front["epoch"] == 2).all()  # NaN novel and epoch 0 dropped
    pts = {(r[f"seen_{level}_acc"], r[f"novel_{level}_acc"]): r for _, r in front.iterrows()}
    on = {k for k, r in pts.items() if r["pareto"]}
    assert on == {(0.9, 0.2), (0.8, 0.5), (0.6, 0.8)}
    assert {k: pts[k]["front_rank"] for k in on} == {(0.6, 0.8): 1, (0.8, 0.5): 2, (0.9, 0.2): 3}
    assert front.loc[~front["pareto"], "front_rank"].isna().all()


def _thresholds(points, level="super", epoch=1):
    """One thresholds row per (trial, seen, novel) point at ``epoch``; the other level is 0.5."""
    other = "sub" if level == "super" else "super"
    return pd.DataFrame([{"trial_id": tid, "epoch": epoch, "score": "msp", "threshold": str(i),
                          f"seen_{level}_acc": s, f"novel_{level}_acc": n,
                          f"seen_{other}_acc": 0.5, f"novel_{other}_acc": 0.5}
                         for i, (tid, s, n) in enumerate(points)])


HAND = [("a", 0.9, 0.2), ("a", 0.8, 0.5), ("b", 0.7, 0.5), ("b", 0.6, 0.8), ("c", 0.6, 0.7),
        ("c", 0.5, 0.3), ("c", 0.95, np.nan)]


def _two_levels(no_novel_super=False):
    df = _thresholds(HAND[:-1], "super").drop(columns=["seen_sub_acc", "novel_sub_acc"])
    df["seen_sub_acc"] = [0.3, 0.4, 0.5, 0.2, 0.1, 0.6]
    df["novel_sub_acc"] = [0.6, 0.5, 0.2, 0.7, 0.1, 0.1]
    if no_novel_super:
        df["novel_super_acc"] = np.nan
    return df


def test_pareto_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    pts = [(f"t{i % 7}", *rng.integers(0, 6, 2) / 5) for i in range(80)]
    front = pareto.pareto_front(_thresholds(pts), "super")
    s, n = front["seen_super_acc"].to_numpy(), front["novel_super_acc"].to_numpy()
    dominated = [((s >= s[i]) & (n >= n[i]) & ((s > s[i]) | (n > n[i]))).any()
                 for i in range(len(s))]
    assert front["pareto"].tolist() == [not d for d in dominated]
    ranks = front.loc[front["pareto"]].sort_values("front_rank")
    assert ranks["front_rank"].tolist() == list(range(1, len(ranks) + 1))
    assert ranks["seen_super_acc"].is_monotonic_increasing


def test_pareto_without_novel_points_is_an_empty_frame_with_columns():
    df = _thresholds([("a", 0.9, np.nan), ("b", 0.8, np.nan)])
    front = pareto.pareto_front(df, "super")
    assert front.empty and {"pareto", "front_rank", "seen_super_acc"} <= set(front.columns)
    assert pareto.pareto_front(pd.DataFrame(), "sub").empty
    with pytest.raises(ValueError):
        pareto.pareto_front(df, "species")


def test_seen_vs_novel_writes_png_with_chosen_star(tmp_path):
    df, path = _two_levels(), tmp_path / "seen_vs_novel.png"
    chosen = {"trial_id": "b", "score": "msp", "threshold": "3"}
    assert pareto.plot_seen_vs_novel(df, chosen, str(path)) is None
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path) == ["seen_vs_novel.png"]
    fig, ax = plt.subplots()
    try:
        assert pareto._draw_level(ax, df, chosen, "super")
        assert "chosen" in ax.get_legend_handles_labels()[1]
        assert any(t.get_text().split("\n") == ["msp", "@ 3", "b"] for t in ax.texts)  # score, rule, trial
    finally:
        plt.close(fig)


@pytest.mark.parametrize("seen, novel", [(0.99, 0.97), (0.99, 0.02), (0.01, 0.99), (0.02, 0.03), (0.5, 0.5)])
def test_the_chosen_points_label_stays_inside_its_panel(seen, novel):
    # a long score name at a corner (a tpr:0.99 point sits at the right edge) must not spill onto the next panel
    df = _thresholds([("4349f_00002", seen, novel), ("a", 0.3, 0.3)])
    df["score"] = "pretrained_hier_hgauss"
    df["threshold"] = "tpr:0.99/tpr:0.965"
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    try:
        assert pareto._draw_level(ax, df, {"trial_id": "4349f_00002", "score": "pretrained_hier_hgauss",
                                            "threshold": "tpr:0.99/tpr:0.965"}, "super")
        fig.canvas.draw()
        box, panel = ax.texts[-1].get_window_extent(), ax.get_window_extent()
        assert panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
    finally:
        plt.close(fig)


def test_seen_vs_novel_panel_without_novel_images_says_why(tmp_path):
    df, path = _two_levels(no_novel_super=True), tmp_path / "svn.png"
    assert pareto.plot_seen_vs_novel(df, {"trial_id": "a", "score": "msp", "threshold": "0"},
                                  str(path)) is None
    assert path.read_bytes()[:8] == PNG_MAGIC
    fig, ax = plt.subplots()
    try:
        assert not pareto._draw_level(ax, df, None, "super")
        assert [t.get_text() for t in ax.texts] == ["validation holds no novel superclass images"]
    finally:
        plt.close(fig)
    nothing = df.assign(novel_sub_acc=np.nan)
    reason = pareto.plot_seen_vs_novel(nothing, None, str(tmp_path / "none.png"))
    assert "no novel superclass" in reason and "no novel subclass" in reason
    assert sorted(os.listdir(tmp_path)) == ["svn.png"]
    assert plt.get_fignums() == []
