"""Scores, thresholds and the hierarchy rule, on hand-made logits."""

import math

import pytest
import torch

from hier_tl.data.taxonomy import NOVEL, LabelSpace
from hier_tl.train import novelty
from hier_tl.train.outputs import Outputs

SPACE = LabelSpace(supers=(0, 1), subs=(10, 11, 12), sub_parent=(0, 0, 1), novel_super=2, novel_sub=13)


def test_scores():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(novelty.msp(logits), torch.tensor([math.exp(2) / (math.exp(2) + 1), 0.5]))
    assert torch.equal(novelty.maxlogit(logits), torch.tensor([2.0, 0.0]))
    assert torch.allclose(novelty.energy(logits), torch.logsumexp(logits, 1))
    assert set(novelty.SCORES) >= {"msp", "maxlogit", "energy"}


def test_hierarchy_conflict_picks_a_child_of_the_predicted_superclass():
    sup = torch.tensor([[5.0, 0.0]])  # superclass 0 (children: sub heads 0 and 1)
    sub = torch.tensor([[1.0, 2.0, 9.0]])  # the unconstrained argmax (head 2) belongs to superclass 1
    s, b = novelty.predict(Outputs(sup, sub), SPACE, "maxlogit", -1e9, -1e9)
    assert s.tolist() == [0] and b.tolist() == [1]


def test_novel_superclass_forces_novel_subclass():
    sup, sub = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 50.0, 0.0]])
    s, b = novelty.predict(Outputs(sup, sub), SPACE, "msp", 0.6, 0.0)
    assert s.tolist() == [NOVEL] and b.tolist() == [NOVEL]


def test_novel_subclass_keeps_the_superclass():
    sup, sub = torch.tensor([[9.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    s, b = novelty.predict(Outputs(sup, sub), SPACE, "msp", 0.6, 0.6)
    assert s.tolist() == [0] and b.tolist() == [NOVEL]


def test_tie_with_threshold_counts_as_seen_and_all_novel_works():
    sup = torch.tensor([[0.0, 0.0]])  # msp exactly 0.5
    s, _ = novelty.predict(Outputs(sup, torch.zeros(1, 3)), SPACE, "msp", 0.5, 0.0)
    assert s.tolist() == [0]
    s, b = novelty.predict(Outputs(torch.randn(6, 2), torch.randn(6, 3)), SPACE, "msp", 1.01, 1.01)
    assert (s == NOVEL).all() and (b == NOVEL).all()


def test_threshold_specs():
    seen = torch.arange(100, dtype=torch.float32) / 100
    assert novelty.resolve_threshold(0.6, seen) == 0.6
    t = novelty.resolve_threshold("tpr:0.95", seen)
    assert float((seen >= t).float().mean()) == pytest.approx(0.95, abs=0.011)
    with pytest.raises(ValueError):
        novelty.resolve_threshold("tpr:1.5", seen)
    with pytest.raises(ValueError, match="unknown novelty score 'odin'"):
        novelty.compute("odin", Outputs(torch.zeros(1, 2), torch.zeros(1, 3)), "super")


def test_per_level_thresholds_apply_each_rule_to_its_own_level():
    from hier_tl.core.config import Threshold
    from hier_tl.train import metrics
    from hier_tl.train.train_config import TrainConfig

    rules = Threshold.per_level("tpr:0.985/best")
    assert (str(rules["super"]), str(rules["sub"])) == ("tpr:0.985", "best")
    assert Threshold.per_level(0.6) == {"super": Threshold("value", 0.6), "sub": Threshold("value", 0.6)}
    for bad, why in (("tpr:0.9/best/0.5", "3 parts"), ("tpr:0.9/", "is not a number"), ("x/0.5", "is not a number")):
        with pytest.raises(ValueError, match=why):
            TrainConfig(threshold=bad).validate()
    g = torch.Generator().manual_seed(0)
    out = Outputs(torch.randn(60, 2, generator=g), torch.randn(60, 3, generator=g),
                  torch.tensor([0, 1, NOVEL] * 20), torch.tensor([0, 2, NOVEL] * 20), SPACE)
    both = metrics.thresholds_for(out, "msp", "tpr:0.9/best")
    assert both["super"] == metrics.thresholds_for(out, "msp", "tpr:0.9")["super"]
    assert both["sub"] == metrics.thresholds_for(out, "msp", "best")["sub"]


def test_knn_scores_by_distance_to_the_kth_training_feature():
    bank = torch.eye(4).repeat(10, 1)  # 40 training features: each axis ten times
    near = torch.tensor([[1.0, 0.01, 0, 0]])
    far = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert novelty.knn_similarity(near, bank) > novelty.knn_similarity(far, bank)
    assert novelty.needs_features("knn") and not novelty.needs_features("msp")
    with pytest.raises(ValueError, match="needs features"):
        novelty.compute("knn", Outputs(torch.zeros(1, 2), torch.zeros(1, 3)), "super")
