"""train.outputs: what a run saves of its images (logits, targets, features, the training bank) survives a
weights-only load, and scores computed from it are hand-checkable, cached, and follow the bank they are given."""

import io
import math

import pytest
import torch

from hier_tl.data.taxonomy import LabelSpace
from hier_tl.train.outputs import Outputs

LN3 = math.log(3)
SPACE = LabelSpace(supers=(0, 1), subs=(0, 1), sub_parent=(0, 1), novel_super=2, novel_sub=2)


def outputs(**kw) -> Outputs:
    """Two images; the bank holds three training images in 2-d feature space."""
    base = dict(super_logits=torch.tensor([[0.0, 0.0], [LN3, 0.0]]), sub_logits=torch.tensor([[0.0, LN3], [0.0, 0.0]]),
                super_target=torch.tensor([0, 1]), sub_target=torch.tensor([1, -1]), space=SPACE,
                feats=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), bank=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                bank_super_logits=torch.tensor([[5.0, 0.0], [0.0, 5.0], [1.0, 1.0]]),
                bank_sub_logits=torch.tensor([[2.0, 0.0], [0.0, 2.0], [LN3, 0.0]]),
                bank_sub_target=torch.tensor([0, 1, 0]))
    return Outputs(**{**base, **kw})


def test_each_level_reads_its_own_logits_targets_and_bank_logits():
    o = outputs()
    assert o.logits("super") is o.super_logits and o.logits("sub") is o.sub_logits
    assert o.target("super") is o.super_target and o.target("sub") is o.sub_target
    assert o.bank_logits("super") is o.bank_super_logits and o.bank_logits("sub") is o.bank_sub_logits


def test_a_logit_score_per_level_by_hand():
    o = outputs()
    # softmax of (0, 0) is (1/2, 1/2); of (ln 3, 0) and (0, ln 3) it is (3/4, 1/4) and (1/4, 3/4)
    assert o.score("msp", "super").tolist() == pytest.approx([0.5, 0.75])
    assert o.score("msp", "sub").tolist() == pytest.approx([0.75, 0.5])
    assert o.score("energy", "super").tolist() == pytest.approx([math.log(2), math.log(4)])


def test_scores_are_computed_once_and_a_level_free_score_once_for_both_levels():
    o = outputs()
    assert o.score("msp", "super") is o.score("msp", "super")
    assert o.score("msp", "super") is not o.score("msp", "sub")
    # knn: cosine similarity to the k-th nearest bank row (k = 10, at most the bank's size: 3)
    # image 1 (1, 0): similarities 1, 0, 1/sqrt 2 -> 3rd largest 0; image 2 (0, 2): 0, 1, 1/sqrt 2 -> 0
    assert o.score("knn", "super") is o.score("knn", "sub")
    assert o.score("knn", "sub").tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_with_bank_keeps_only_the_chosen_bank_rows_and_scores_afresh():
    o = outputs()
    o.score("knn", "super")  # cached against the whole bank
    small = o.with_bank(torch.tensor([0, 2]))
    assert torch.equal(small.bank, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(small.bank_sub_target, torch.tensor([0, 0])) and len(small.bank_super_logits) == 2
    assert small.feats is o.feats and small.super_logits is o.super_logits  # the images are the same
    # k = 2 of 2 rows: image 1: similarities 1, 1/sqrt 2 -> 1/sqrt 2; image 2: 0, 1/sqrt 2 -> 0
    assert small.score("knn", "super").tolist() == pytest.approx([1 / math.sqrt(2), 0.0], abs=1e-6)
    assert len(o.bank) == 3 and o.score("knn", "super").tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_bank_rows_can_be_scored_as_images_against_the_rest_of_the_bank():
    o = outputs()
    q = o.bank_as_queries(torch.tensor([2]), torch.tensor([0, 1]))
    assert torch.equal(q.feats, torch.tensor([[1.0, 1.0]])) and torch.equal(q.super_logits, torch.tensor([[1.0, 1.0]]))
    assert torch.equal(q.bank, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert q.super_target is None and q.sub_target is None  # held-out bank rows carry no validation targets
    assert q.score("msp", "sub").tolist() == pytest.approx([0.75])  # bank_sub_logits row 2: (ln 3, 0)
    assert q.score("knn", "sub").tolist() == pytest.approx([1 / math.sqrt(2)], abs=1e-6)  # 2nd of (1/sqrt 2, 1/sqrt 2)


def test_saved_outputs_load_back_weights_only_with_the_label_space():
    o = outputs()
    o.score("msp", "super")
    d = o.to_dict()
    assert "_cache" not in d and d["space"] == SPACE.to_dict()
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    back = Outputs.from_dict(torch.load(buf, weights_only=True))
    assert back.space == SPACE
    for name, was in vars(o).items():
        if name not in ("space", "_cache"):
            now = getattr(back, name)
            assert (now is None and was is None) or torch.equal(now, was), name
    assert back.bank_backbone is None and torch.equal(back.bank, o.bank)
    assert Outputs.from_dict({"super_logits": o.super_logits, "sub_logits": o.sub_logits}).space is None


def test_bank_state_is_what_a_checkpoint_keeps_for_new_images():
    o = outputs()
    state = o.bank_state()
    assert set(state) == set(Outputs.BANK_FIELDS) and state["bank"] is o.bank and state["bank_ref"] is None
    assert outputs(bank=None).bank_state() is None
