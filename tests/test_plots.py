"""analysis.plots: the report's own figures: accuracies in %, epochs on whole numbers, trials named by their id,
a note where a seen-accuracy curve is calibrated."""

import pandas as pd
import pytest

from hier_tl.analysis import plots


@pytest.mark.parametrize("threshold, level, note", [
    ("tpr:0.95", "super", "calibrated: tpr:0.95 keeps ~95% of seen images as seen"),
    ("tpr:0.985/tpr:0.965", "sub", "calibrated: tpr:0.965 keeps ~96% of seen images as seen"),
    ("0.6", "super", ""), ("best", "sub", ""), ("tpr:0.9/0.5", "sub", ""),
])
def test_a_calibrated_level_says_why_its_curve_is_flat(threshold, level, note):
    assert plots.calibrated_note(threshold, level).strip() == note


def test_curves_use_percent_whole_epochs_and_trial_ids(tmp_path, monkeypatch):
    drawn = {}
    real_save = plots.save

    def keep(fig, path):
        drawn["fig"] = fig
        axes = fig.axes
        drawn["ticks"] = [t for t in axes[0].get_xticks() if axes[0].get_xlim()[0] <= t <= axes[0].get_xlim()[1]]
        drawn["ylabels"] = [lab.get_text() for lab in axes[2].get_yticklabels()]
        drawn["legend"] = [t.get_text() for t in axes[0].get_legend().get_texts()]
        real_save(fig, path)
    monkeypatch.setattr(plots, "save", keep)
    epochs = pd.DataFrame({"trial_id": ["t7"] * 3, "epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7],
                           "val_loss": [1.1, 0.9, 0.8], "seen_super_acc": [0.9, 0.93, 0.95],
                           "seen_sub_acc": [0.5, 0.6, 0.7]})
    table = pd.DataFrame({"backbone": ["cnn"], "depth": ["full"], "best_trial": ["t7"], "threshold": ["tpr:0.95"]})
    plots.plot_curves(epochs, table, tmp_path / "curves.png")
    assert all(float(t).is_integer() for t in drawn["ticks"])
    assert all(lab.endswith("%") for lab in drawn["ylabels"] if lab)
    assert drawn["legend"] == ["cnn/full (t7)"]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_rungs_count_the_trials_that_reached_each_epoch(tmp_path, monkeypatch):
    heights = {}
    real_save = plots.save

    def keep(fig, path):
        heights["bars"] = [p.get_height() for p in fig.axes[0].patches]
        real_save(fig, path)
    monkeypatch.setattr(plots, "save", keep)
    plots.plot_rungs(pd.DataFrame({"epochs_run": [1, 1, 3, 4]}), tmp_path / "rungs.png")
    assert heights["bars"] == [4, 2, 2, 1]
