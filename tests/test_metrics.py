"""Metrics against hand-computed values, and leaderboard scoring of CSV files."""

import math

import pytest
import torch

from hier_tl import metrics
from hier_tl.cli import main
from hier_tl.taxonomy import NOVEL, LabelSpace


def test_accuracy_seen_and_novel():
    pred = torch.tensor([0, 1, NOVEL, NOVEL, 2])
    target = torch.tensor([0, 2, NOVEL, 1, NOVEL])
    m = metrics.accuracy(pred, target)
    assert m["acc"] == pytest.approx(2 / 5) and m["seen_acc"] == pytest.approx(1 / 3) and m["novel_acc"] == 0.5
    assert math.isnan(metrics.accuracy(torch.tensor([1]), torch.tensor([1]))["novel_acc"])


def test_auroc_and_fpr95_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    pos = torch.tensor([True, True, False, True, False])
    # pairs (pos, neg): (0.9,.7)(0.9,.5)(0.8,.7)(0.8,.5)(0.6,.7)x(0.6,.5) -> 5/6
    assert metrics.auroc(scores, pos) == pytest.approx(5 / 6)
    assert metrics.auroc(torch.tensor([1.0, 1.0]), torch.tensor([True, False])) == 0.5  # tie counts half
    assert math.isnan(metrics.auroc(scores, torch.ones(5, dtype=torch.bool)))
    # the threshold keeping 95% of seen is just under 0.6: both novel images (0.7, 0.5) -> only 0.7 passes
    assert metrics.fpr_at_tpr(scores, pos) == pytest.approx(0.5)


def test_novel_subclasses_of_seen_superclasses_are_counted_apart_from_novel_superclasses():
    """`novel_sub_acc` mixes new breeds of known animals with new animals; the new breeds alone are
    `novel_sub_seen_super_acc`, whatever the mix."""
    space = LabelSpace((0, 1), (10, 11), (0, 1), 2, 12)
    big = 10.0
    out = metrics.Outputs(  # seen / new breed, unsure (caught) / new breed, sure (missed) / new animal (caught)
        super_logits=torch.tensor([[big, 0], [big, 0], [0, big], [0, 0.0]]),
        sub_logits=torch.tensor([[big, 0], [0, 0.0], [0, big], [0, 0.0]]),
        super_target=torch.tensor([0, 0, 1, NOVEL]), sub_target=torch.tensor([0, NOVEL, NOVEL, NOVEL]))
    m = metrics.evaluate(out, space, "msp", 0.6)
    assert m["novel_sub_seen_super_acc"] == 0.5 and m["novel_sub_acc"] == pytest.approx(2 / 3)
    assert metrics.NEW_SUB in metrics.reported_metrics()
    (row,) = metrics.threshold_rows(metrics.Outputs(**{**out.__dict__, "space": space}), ("msp",), (0.6,))
    assert row["novel_sub_seen_super_acc"] == 0.5
    none = metrics.Outputs(out.super_logits[:1], out.sub_logits[:1], out.super_target[:1], out.sub_target[:1])
    assert math.isnan(metrics.evaluate(none, space, "msp", 0.6)["novel_sub_seen_super_acc"])


def test_evaluate_and_objective():
    space = LabelSpace((0, 1), (10, 11), (0, 1), 2, 12)
    big = 10.0
    out = metrics.Outputs(
        super_logits=torch.tensor([[big, 0], [0, big], [0, 0.0]]),
        sub_logits=torch.tensor([[big, 0], [0, big], [0, 0.0]]),
        super_target=torch.tensor([0, 1, NOVEL]), sub_target=torch.tensor([0, 1, NOVEL]))
    m = metrics.evaluate(out, space, "msp", 0.6, scores=("energy",))
    assert m["seen_super_acc"] == 1 and m["novel_super_acc"] == 1 and m["seen_sub_acc"] == 1
    assert m["objective"] == 1 and m["auroc_super_msp"] == 1 and "auroc_sub_energy" in m
    best = metrics.evaluate(out, space, "msp", "best")
    assert best["objective"] == 1


def _csv(path, rows):
    path.write_text("image,superclass_index,subclass_index\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def test_score_command_by_hand(synth_dir, tmp_path, capsys):
    # novel indices of the synthetic set: superclass 3, subclass 9
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1), ("b.jpg", 1, 9), ("c.jpg", 3, 9), ("d.jpg", 2, 5)])
    preds = _csv(tmp_path / "p.csv", [("d.jpg", 2, 4), ("a.jpg", 0, 1), ("b.jpg", 1, 9), ("c.jpg", 1, 9)])
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    # superclass: a,b,d right, c wrong -> 75%; seen (a,b,d) 100%; novel (c) 0%
    assert "overall  75.00%  seen 100.00%  novel   0.00%" in out
    # subclass: a right, b right (novel), c right (novel), d wrong -> 75%; seen (a,d) 50%; novel (b,c) 100%
    assert "overall  75.00%  seen  50.00%  novel 100.00%" in out


def test_score_a_literal_minus_one_is_not_novel(synth_dir, tmp_path, capsys):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 3, 9)])
    preds = _csv(tmp_path / "p.csv", [("a.jpg", -1, -1)])
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 0
    assert "novel   0.00%" in capsys.readouterr().out


@pytest.mark.parametrize("rows,needle", [
    ([("a.jpg", 0, 1)], "no prediction"),
    ([("a.jpg", 0, 1), ("b.jpg", 1, 9), ("z.jpg", 1, 1)], "not in the labels"),
    ([("a.jpg", 0, 1), ("a.jpg", 0, 1)], "more than once"),
    ([("a.jpg", "x", 1), ("b.jpg", 1, 9)], "not an integer"),
])
def test_score_errors(synth_dir, tmp_path, capsys, rows, needle):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1), ("b.jpg", 1, 9)])
    preds = _csv(tmp_path / "p.csv", rows)
    assert main(["score", str(preds), str(labels), "--data", str(synth_dir)]) == 2
    assert needle in capsys.readouterr().err


def test_score_wrong_columns(synth_dir, tmp_path, capsys):
    labels = _csv(tmp_path / "l.csv", [("a.jpg", 0, 1)])
    (tmp_path / "p.csv").write_text("img,super,sub\na.jpg,0,1\n")
    assert main(["score", str(tmp_path / "p.csv"), str(labels), "--data", str(synth_dir)]) == 2
    assert "missing column" in capsys.readouterr().err


def test_fold_metrics_are_means_with_spread_summed_times_and_fold_zero_thresholds():
    folds = [{"epoch": 2, "objective": 0.5, "novel_super_acc": 0.2, "train_time": 1.0, "threshold_super": 0.3},
             {"epoch": 2, "objective": 0.7, "novel_super_acc": math.nan, "train_time": 2.0, "threshold_super": 0.9}]
    m = metrics.combine_folds(folds)
    assert m["objective"] == pytest.approx(0.6) and m["objective_std"] == pytest.approx(0.1)
    assert m["novel_super_acc"] == pytest.approx(0.2)  # a fold without novel images does not count
    assert m["train_time"] == 3.0 and m["threshold_super"] == 0.3 and m["epoch"] == 2
    assert metrics.combine_folds(folds[:1]) is folds[0]
    rows = metrics.mean_rows([[{"score": "msp", "threshold": "best", "objective": 0.4, "threshold_super": 0.1}],
                              [{"score": "msp", "threshold": "best", "objective": 0.8, "threshold_super": 0.7}]])
    assert rows == [{"score": "msp", "threshold": "best", "objective": pytest.approx(0.6), "threshold_super": 0.1}]
