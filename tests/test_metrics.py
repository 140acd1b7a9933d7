"""Metrics against hand-computed values, and leaderboard scoring of CSV files."""

import math

import pytest
import torch

from hier_tl.data.taxonomy import NOVEL, LabelSpace
from hier_tl.train import metrics
from hier_tl.train.outputs import Outputs


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
    out = Outputs(  # seen / new breed, unsure (caught) / new breed, sure (missed) / new animal (caught)
        super_logits=torch.tensor([[big, 0], [big, 0], [0, big], [0, 0.0]]),
        sub_logits=torch.tensor([[big, 0], [0, 0.0], [0, big], [0, 0.0]]),
        super_target=torch.tensor([0, 0, 1, NOVEL]), sub_target=torch.tensor([0, NOVEL, NOVEL, NOVEL]))
    m = metrics.evaluate(out, space, "msp", 0.6)
    assert m["novel_sub_seen_super_acc"] == 0.5 and m["novel_sub_acc"] == pytest.approx(2 / 3)
    assert metrics.NEW_SUB in metrics.reported_metrics()
    (row,) = metrics.threshold_rows(Outputs(**{**out.__dict__, "space": space}), ("msp",), (0.6,))
    assert row["novel_sub_seen_super_acc"] == 0.5
    none = Outputs(out.super_logits[:1], out.sub_logits[:1], out.super_target[:1], out.sub_target[:1])
    assert math.isnan(metrics.evaluate(none, space, "msp", 0.6)["novel_sub_seen_super_acc"])


@pytest.mark.parametrize("sup_unsure, expect", [
    ((False, False), 0.0),  # both new breeds keep their known superclass
    ((True, False), 0.5),  # one of the two is called a new kind of animal
    ((True, True), 1.0),
])
def test_new_breeds_called_a_novel_superclass(sup_unsure, expect):
    """`new_breed_as_novel_super` counts only images of a novel subclass of a seen superclass whose
    superclass is called novel: a seen image or a new animal called novel changes nothing."""
    space = LabelSpace((0, 1), (10, 11), (0, 1), 2, 12)
    unsure = [0, 0.0]
    out = Outputs(  # seen (unsure: called novel) / new breed of 0 / new breed of 1 / new animal (unsure: caught)
        super_logits=torch.tensor([unsure, unsure if sup_unsure[0] else [10.0, 0], unsure if sup_unsure[1] else
                                   [0, 10.0], unsure]),
        sub_logits=torch.zeros(4, 2), super_target=torch.tensor([0, 0, 1, NOVEL]),
        sub_target=torch.tensor([0, NOVEL, NOVEL, NOVEL]), space=space)
    m = metrics.evaluate(out, space, "msp", 0.6)
    assert m[metrics.NEW_BREED_SUPER] == expect and m["seen_super_acc"] == pytest.approx((2 - sum(sup_unsure)) / 3)
    (row,) = metrics.threshold_rows(out, ("msp",), (0.6,))
    assert row["new_breed_as_novel_super"] == expect
    assert metrics.NEW_BREED_SUPER in metrics.reported_metrics()


@pytest.mark.parametrize("name, mode", [
    ("new_breed_as_novel_super", "min"), ("final_new_breed_as_novel_super", "min"), ("fpr95_super_msp", "min"),
    ("val_loss", "min"), ("novel_sub_seen_super_acc", "max"), ("objective", "max")])
def test_metric_direction(name, mode):
    """What `best --metric` ranks by: a fraction of wrong calls is minimised."""
    assert metrics.metric_mode(name) == mode


def test_evaluate_and_objective():
    space = LabelSpace((0, 1), (10, 11), (0, 1), 2, 12)
    big = 10.0
    out = Outputs(
        super_logits=torch.tensor([[big, 0], [0, big], [0, 0.0]]),
        sub_logits=torch.tensor([[big, 0], [0, big], [0, 0.0]]),
        super_target=torch.tensor([0, 1, NOVEL]), sub_target=torch.tensor([0, 1, NOVEL]))
    m = metrics.evaluate(out, space, "msp", 0.6, scores=("energy",))
    assert m["seen_super_acc"] == 1 and m["novel_super_acc"] == 1 and m["seen_sub_acc"] == 1
    assert m["objective"] == 1 and m["auroc_super_msp"] == 1 and "auroc_sub_energy" in m
    best = metrics.evaluate(out, space, "msp", "best")
    assert best["objective"] == 1


def test_the_objective_is_the_mean_of_the_seen_and_novel_accuracies_that_exist():
    """By hand: 4 seen images and 4 novel ones at each level, with known rights and wrongs; a novel
    superclass forces a novel subclass. Superclass: seen 2/4, novel 2/4; subclass: seen 2/4, novel 3/4."""
    space = LabelSpace((0, 1), (10, 11, 12, 13), (0, 0, 1, 1), 2, 14)
    sure, unsure = 10.0, 0.0  # msp 1.0 vs 0.5 with two classes; threshold 0.6
    sup = [[sure, 0], [sure, 0], [0, sure], [unsure, 0],  # seen: right, right, wrong class, called novel
           [unsure, 0], [unsure, 0], [sure, 0], [0, sure]]  # novel superclass: caught, caught, missed, missed
    sub = [[sure, 0, 0, 0], [0, sure, 0, 0], [0, 0, sure, 0], [sure, 0, 0, 0],
           [sure, 0, 0, 0], [sure, 0, 0, 0], [0, 0, 0, 0], [0, 0, sure, 0]]
    out = Outputs(torch.tensor(sup), torch.tensor(sub), torch.tensor([0, 0, 0, 1, NOVEL, NOVEL, NOVEL, NOVEL]),
                  torch.tensor([0, 1, 1, 2, NOVEL, NOVEL, NOVEL, NOVEL]))
    m = metrics.evaluate(out, space, "msp", 0.6)
    assert (m["seen_super_acc"], m["novel_super_acc"]) == (0.5, 0.5)  # image 2 wrong class, 3 called novel
    assert (m["seen_sub_acc"], m["novel_sub_acc"]) == (0.5, 0.75)  # image 6: sub logits flat -> novel
    assert m["objective"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.75) / 4)
    seen_only = Outputs(out.super_logits[:4], out.sub_logits[:4], out.super_target[:4], out.sub_target[:4])
    m3 = metrics.evaluate(seen_only, space, "msp", 0.6)  # no novel image: the novel terms do not exist
    assert math.isnan(m3["novel_super_acc"]) and m3["objective"] == pytest.approx((0.5 + 0.5) / 2)


def test_super_margin_places_the_superclass_threshold_among_the_known_breeds():
    """Known-breed superclass scores 0..20: median 10, 5th percentile 1, so a threshold of 5.5 sits 0.5 spreads
    below the median; `threshold_at_margin` inverts it. Without new breeds in validation it is NaN."""
    known = torch.arange(21.0)
    assert metrics.margin_of(known, 5.5) == pytest.approx(0.5)
    assert metrics.threshold_at_margin(known, 0.5) == pytest.approx(5.5)
    space = LabelSpace((0,), (10, 11), (0, 0), 1, 12)
    logits = torch.stack([torch.zeros(22), torch.cat([torch.arange(21.0), torch.zeros(1)]) / 10], 1)
    sub_target = torch.tensor([0] * 21 + [NOVEL])  # 21 known-breed images, one new breed
    out = Outputs(logits[:, 1:], logits, torch.zeros(22, dtype=torch.long), sub_target, space)  # maxlogit = i / 10
    assert metrics.evaluate(out, space, "maxlogit", 0.55)[metrics.SUPER_MARGIN] == pytest.approx(0.5)
    assert metrics.SUPER_MARGIN in metrics.reported_metrics()
    no_breeds = Outputs(logits[:21, 1:], logits[:21], torch.zeros(21, dtype=torch.long), sub_target[:21], space)
    assert math.isnan(metrics.evaluate(no_breeds, space, "maxlogit", 0.55)[metrics.SUPER_MARGIN])
