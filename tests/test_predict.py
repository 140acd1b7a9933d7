"""The predictions CSV: well-formed for any file name, every skipped image reported, written atomically."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from hier_tl.cli import main
from hier_tl.predict.predict import Predictor


def test_odd_file_names_are_quoted_or_refused_and_said(run_dir, synth_dir, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = sorted((synth_dir / "test_images").iterdir())
    names = ["1.jpg", "a,b.jpg", 'say "hi".jpg', "tab\there.jpg", "new\nline.jpg", "é ü.jpg"]
    for name, s in zip(names, src):
        shutil.copy(s, imgs / name)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), "--images", str(imgs), "--out", str(out), "--threshold", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "2 image(s) skipped" in err and "'tab\\there.jpg'" in err and "'new\\nline.jpg'" in err
    df = pd.read_csv(out)  # a standard reader gets exactly one row per kept image back
    assert sorted(df.image) == sorted(["1.jpg", "a,b.jpg", 'say "hi".jpg', "é ü.jpg"])
    assert df.superclass_index.dtype.kind == "i" and df.subclass_index.dtype.kind == "i"


def test_a_failed_write_leaves_no_partial_csv(run_dir, synth_dir, tmp_path, monkeypatch, capsys):
    import csv
    import errno

    out = tmp_path / "p.csv"
    out.write_text("old predictions\n")

    class FullDisk:  # the disk fills up after the header, in the middle of the stream
        def __init__(self, f, **kw):
            self.f = f

        def writerow(self, row):
            self.f.write(",".join(row) + "\n")

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(csv, "writer", FullDisk)
    assert main(["predict", str(run_dir), "--images", str(synth_dir / "test_images"), "--out", str(out),
                 "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {out}: no space left on the device"
    assert out.read_text() == "old predictions\n" and [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_predictions_stream_in_chunks_in_file_name_order(run_dir, synth_dir, tmp_path):
    """Chunks of 2 images give the same CSV as one chunk of all: order, rows and values do not depend on it."""
    from hier_tl.predict.predict import Predictor, write_predictions
    p = Predictor.from_checkpoint(run_dir / "checkpoint.pt", 0.5)
    whole, pieces = tmp_path / "whole.csv", tmp_path / "pieces.csv"
    n = write_predictions(p, synth_dir / "test_images", whole, chunk=10_000)
    assert write_predictions(p, synth_dir / "test_images", pieces, chunk=2) == n
    assert pieces.read_text() == whole.read_text() and n == len(list((synth_dir / "test_images").iterdir()))


def test_predicted_indices_are_the_hand_computed_ones(tmp_path):
    """A model whose logits are known for each image colour: mean RGB -> features (identity projection) ->
    heads of weight 10. Mapping-file indices are not head positions (superclasses 0, 2, 5; novel 7 and 99),
    and a grey image is unfamiliar at both levels."""
    import torch
    from PIL import Image

    from hier_tl.data.taxonomy import LabelSpace
    from hier_tl.predict.predict import Predictor, write_predictions
    from hier_tl.train.models import Backbone, HierNet

    class MeanRGB(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    model = HierNet(Backbone(MeanRGB(), 3, [], ((0.5,) * 3, (0.5,) * 3)), n_super=3, n_sub=3, proj_dim=3, dropout=0)
    with torch.no_grad():  # proj = identity (inputs are in [-1, 1] after the norm; ReLU keeps the positive part)
        model.proj[0].weight.copy_(torch.eye(3))
        model.proj[0].bias.zero_()
        for head in (model.super_head, model.sub_head):
            head.weight.copy_(10 * torch.eye(3))
            head.bias.zero_()
    space = LabelSpace(supers=(0, 2, 5), subs=(10, 20, 50), sub_parent=(0, 1, 2), novel_super=7, novel_sub=99)
    colours = {"3.png": (255, 0, 0), "1.png": (0, 255, 0), "2.png": (0, 0, 255), "10.png": (128, 128, 128)}
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, rgb in colours.items():
        Image.new("RGB", (8, 8), rgb).save(imgs / name)
    p = Predictor(model.eval(), space, ((0.5,) * 3, (0.5,) * 3), 8, 8, "msp", 0.9, 0.9, precision="fp32")
    assert write_predictions(p, imgs, tmp_path / "p.csv") == 4
    # red -> head 0 (superclass 0, subclass 10); green -> head 1 (2, 20); blue -> head 2 (5, 50);
    # grey -> every logit 0, msp 1/3 < 0.9: novel at both levels (7, 99); rows in numeric file-name order
    assert (tmp_path / "p.csv").read_text() == ("image,superclass_index,subclass_index\n"
                                                "1.png,2,20\n2.png,5,50\n3.png,0,10\n10.png,7,99\n")


@pytest.fixture(scope="module")
def trained(synth_ds, tmp_path_factory):
    """A `hier-tl train` run folder whose validation holds a novel subclass, with its rule tpr:0.95."""
    from hier_tl.results.runfolder import train_to_folder
    from hier_tl.train.train_config import TrainConfig

    out = tmp_path_factory.mktemp("trained")
    train_to_folder(TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25, holdout_subclasses=1,
                                threshold="tpr:0.95"), synth_ds, out, log=lambda *a: None)
    return out


def _by_hand(run: Path, rule: str, level: str) -> float:
    """What a rule means, computed here from the saved validation logits: msp = the largest softmax probability."""
    d = torch.load(run / "val_outputs.pt", weights_only=True)
    s = d[f"{level}_logits"].softmax(-1).amax(-1).double()
    seen = d[f"{level}_target"] != -1
    if rule.startswith("tpr:"):
        return float(torch.quantile(s[seen], 1 - float(rule[4:])))
    if rule == "best":  # the score maximising TPR + TNR (first of ties); tpr:0.95 where no image is novel
        if seen.all():
            return _by_hand(run, "tpr:0.95", level)
        def value(c):
            return float((s[seen] >= c).double().mean() + (s[~seen] < c).double().mean())
        return float(max(torch.unique(s), key=value))
    return float(rule)


# --threshold as the sweep file takes it: (rule, superclass rule, subclass rule)
RULES = [("0.5", "0.5", "0.5"), ("0.3/0.7", "0.3", "0.7"), ("tpr:0.9", "tpr:0.9", "tpr:0.9"),
         ("tpr:0.8/0.25", "tpr:0.8", "0.25"), ("best", "best", "best"), ("0.4/best", "0.4", "best"),
         ("tpr:1", "tpr:1", "tpr:1")]


@pytest.mark.parametrize("rule,sup,sub", RULES)
def test_threshold_rules_resolve_on_the_runs_validation_scores(trained, rule, sup, sub):
    p = Predictor.from_checkpoint(trained / "checkpoint.pt", rule)
    assert p.thr_super == pytest.approx(_by_hand(trained, sup, "super"), abs=1e-6)
    assert p.thr_sub == pytest.approx(_by_hand(trained, sub, "sub"), abs=1e-6)


def _no_outputs(trained, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(trained / "checkpoint.pt", bare)
    return bare


@pytest.mark.parametrize("rule,outcome", [
    ("tpr:0.95", "recorded"),  # the run's own rule: the values it recorded, no validation scores needed
    ("0.45", (0.45, 0.45)),
    ("tpr:0.9", "needs validation scores to resolve"),
    ("0.5/best", "the subclass rule best needs validation scores"),
])
def test_without_validation_outputs_only_numbers_and_the_own_rule_resolve(trained, tmp_path, rule, outcome, capsys):
    bare = _no_outputs(trained, tmp_path)
    if isinstance(outcome, str) and outcome != "recorded":
        out = tmp_path / "p.csv"
        assert main(["predict", str(bare), "--images", str(trained), "--out", str(out), "--threshold", rule]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and outcome in err[0] and str(bare / "checkpoint.pt") in err[0] and not out.exists()
        return
    last = torch.load(trained / "checkpoint.pt", weights_only=True)["history"][-1]
    want = (last["threshold_super"], last["threshold_sub"]) if outcome == "recorded" else outcome
    p = Predictor.from_checkpoint(bare / "checkpoint.pt", rule)
    assert (p.thr_super, p.thr_sub) == pytest.approx(want)


@pytest.mark.parametrize("rule", ["nan", "inf", "-inf", "1e999", "", " ", "abc", "tpr:0", "tpr:1.5", "tpr:nan",
                                  "0.5/nan", "1/2/3", "best/", "/0.5"])
def test_a_bad_threshold_is_refused_before_any_work(tmp_path, rule, capsys):
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tmp_path / "none"), "--images", str(tmp_path), "--out", str(out), f"--threshold={rule}"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and last.startswith("hier-tl predict: error: argument --threshold: ")
    assert "is not a number, 'best' or 'tpr:P'" in last or "has 3 parts" in last
    assert not out.exists()


@pytest.mark.parametrize("damage,needle", [
    ("truncated", "not a complete validation outputs file"),
    ("other_epoch", "not the validation outputs of the checkpoint beside it"),
    ("not_outputs", "not validation outputs hier-tl wrote"),
])
def test_damaged_validation_outputs_are_one_line_naming_them(trained, tmp_path, damage, needle, capsys):
    run = _no_outputs(trained, tmp_path)
    good = (trained / "val_outputs.pt").read_bytes()
    d = torch.load(trained / "val_outputs.pt", weights_only=True)
    if damage == "truncated":
        (run / "val_outputs.pt").write_bytes(good[: len(good) // 2])
    else:
        d = {**d, "super_logits": d["super_logits"] * 3} if damage == "other_epoch" else {"x": torch.zeros(1)}
        torch.save(d, run / "val_outputs.pt")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--images", str(trained), "--out", str(out), "--threshold", "tpr:0.9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(run / "val_outputs.pt") in err[0] and not out.exists()


def test_a_sweep_trials_threshold_grid_resolves_rules_its_checkpoint_cannot(trained, tmp_path):
    """A sweep trial's checkpoint holds no validation outputs, but its sweep resolved a grid of rules at every
    epoch (thresholds.parquet): `--threshold tpr:0.99/tpr:0.98` takes each level's value from there."""
    bare = _no_outputs(trained, tmp_path)
    grid = {"super": {"tpr:0.99": -7.5, "0.3": 0.3}, "sub": {"tpr:0.98": -2.25, "0.3": 0.3}}
    p = Predictor.from_checkpoint(bare / "checkpoint.pt", "tpr:0.99/tpr:0.98", grid=grid)
    assert (p.thr_super, p.thr_sub) == (-7.5, -2.25)
    from hier_tl.core.errors import CheckpointError
    with pytest.raises(CheckpointError, match=r"subclass rule tpr:0.9 .*grid did not resolve it \(it did: 0.3, tpr:0.98\)"):
        Predictor.from_checkpoint(bare / "checkpoint.pt", "tpr:0.99/tpr:0.9", grid=grid)


@pytest.mark.slow
def test_the_threshold_grid_of_a_sweep_matches_what_its_trials_recorded(sweep, tmp_path):
    from hier_tl.results.reading import load_results, threshold_grid, trial_checkpoint

    results, data = sweep
    res = load_results(str(results), tables=("thresholds",))
    t = res.trials.iloc[0]
    ckpt, _ = trial_checkpoint(res.storage, t)
    last, score = ckpt["history"][-1], ckpt["config"]["novelty_score"]
    grid = threshold_grid(res, t["trial_id"], int(ckpt["epoch"]), score)
    assert grid["super"]["tpr:0.95"] == pytest.approx(last["threshold_super"])  # its own rule, as it recorded
    assert grid["sub"]["tpr:0.95"] == pytest.approx(last["threshold_sub"]) and grid["sub"]["0.7"] == 0.7
    assert threshold_grid(res, "no-such-trial", 1, score) == {"super": {}, "sub": {}}
    out = tmp_path / "p.csv"  # a per-level rule assembled from the grid, through the command line
    assert main(["predict", str(results), "--trial", t["trial_id"], "--images", str(data / "test_images"),
                 "--out", str(out), "--threshold", "0.7/tpr:0.95"]) == 0
