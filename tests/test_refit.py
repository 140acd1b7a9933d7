"""predict.refit: retraining a trial's configuration on every class, with its thresholds recalibrated."""
import pandas as pd
import pytest

from hier_tl.cli import main

pytestmark = pytest.mark.slow


def test_predict_with_refit(sweep, tmp_path):
    results, data = sweep
    out = tmp_path / "p.csv"
    assert main(["predict", str(results), "--images", str(data / "test_images"), "--out", str(out), "--refit"]) == 0
    assert len(pd.read_csv(out)) == len(pd.read_csv(data / "test_labels.csv"))
    assert any((results / "refit").iterdir())
    # a tpr rule is resolved again for the refit model, on held-back calibration images, and recorded
    from hier_tl.predict.predict import Predictor
    from hier_tl.train import checkpoint
    path = next((results / "refit").glob("*/checkpoint.pt"))
    ckpt = checkpoint.load(path)
    assert ckpt["calibration"]["method"] == "held-back calibration images" and ckpt["calibration"]["rule"] == "tpr:0.95"
    assert ckpt["config"]["val_fraction"] == 0.1 and ckpt["config"]["holdout_subclasses"] == 0
    p = Predictor.from_checkpoint(path)
    last = ckpt["history"][-1]
    assert (p.thr_super, p.thr_sub) == (last["threshold_super"], last["threshold_sub"])
    assert last["seen_sub_acc"] == last["seen_sub_acc"]  # calibration images exist (not NaN)
    # the calibration images are all known breeds: the superclass threshold keeps the trial's margin below them
    # (its validation held a subclass out), and both thresholds are recorded
    cal = ckpt["calibration"]
    assert cal["super_margin"] == cal["super_margin"] and cal["super_threshold"] == last["threshold_super"]
    assert "super_recalibrated" in cal
    assert not list((results / "refit").glob("*/*.tmp"))
    # what a user can expect on new images of known classes: the held-back images scored with the final thresholds
    held = cal["held_back"]
    assert held["images"] > 0 and 0 <= held["seen_sub_acc"] <= held["closed_sub_acc"] <= 1
    assert 0 <= held["seen_super_acc"] <= held["closed_super_acc"] <= 1


def test_refit_calibrates_the_rule_predict_is_given(sweep, tmp_path, capsys):
    """`--refit --threshold RULE`: the refit resolves RULE (its tpr: levels on the held-back images, its numbers
    as given) instead of the trial's own rule; `best`, which needs novel images, is refused. `--refit-epochs`
    sets how long it trains."""
    results, data = sweep
    out = tmp_path / "p.csv"
    args = ["predict", str(results), "--images", str(data / "test_images"), "--out", str(out), "--refit"]
    assert main([*args, "--threshold", "0.25/tpr:0.9", "--refit-epochs", "2"]) == 0
    from hier_tl.train import checkpoint
    ckpt = checkpoint.load(next((results / "refit").glob("*/checkpoint.pt")))
    cal, last = ckpt["calibration"], ckpt["history"][-1]
    assert cal["rule"] == "0.25/tpr:0.9" and cal["levels"] == ["sub"] and last["threshold_super"] == 0.25
    assert ckpt["config"]["epochs"] == 2 and len(ckpt["history"]) == 2
    assert "superclass 0.25," in capsys.readouterr().out
    assert main([*args, "--threshold", "best"]) == 2
    assert "best needs novel images" in capsys.readouterr().err


def test_refit_epochs_needs_refit(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "p.csv"),
                 "--refit-epochs", "3"]) == 2
    assert "--refit-epochs sets how long a refit trains: add --refit" in capsys.readouterr().err
