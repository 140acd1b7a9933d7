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
    import errno
    from pathlib import Path

    out = tmp_path / "p.csv"
    out.write_text("old predictions\n")
    real = Path.write_text

    def full_disk(self, *a, **k):
        if self.name.endswith(".tmp"):
            real(self, "partial", **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["predict", str(run_dir), "--images", str(synth_dir / "test_images"), "--out", str(out),
                 "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {out}: no space left on the device"
    assert out.read_text() == "old predictions\n" and [p.name for p in tmp_path.iterdir()] == ["p.csv"]


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
