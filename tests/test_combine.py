"""train.combine: an ensemble's outputs average the members' probabilities, join their features so a cosine
is the mean of theirs, and score the members' disagreement."""

import math

import pytest
import torch

from hier_tl.core.errors import ConfigError
from hier_tl.data.taxonomy import LabelSpace
from hier_tl.train.combine import combine
from hier_tl.train.outputs import Outputs

SPACE = LabelSpace((0, 1), (10, 11), (0, 1), 2, 12)


def _member(logits, feats, bank):
    logits = torch.tensor(logits)
    return Outputs(logits, logits, space=SPACE, feats=torch.tensor(feats), bank=torch.tensor(bank),
                   backbone_feats=torch.tensor(feats), bank_backbone=torch.tensor(bank),
                   bank_super_logits=torch.zeros(1, 2), bank_sub_logits=torch.zeros(1, 2),
                   bank_sub_target=torch.tensor([0]))


def test_probabilities_are_averaged_energy_kept_and_cosines_averaged():
    a = _member([[math.log(3), 0.0]], [[1.0, 0.0]], [[1.0, 0.0]])  # p = (0.75, 0.25), cosine to the bank 1
    b = _member([[0.0, 0.0]], [[0.0, 2.0]], [[1.0, 0.0]])  # p = (0.5, 0.5), cosine 0
    ens = combine([a, b])
    assert ens.super_logits.softmax(-1)[0].tolist() == pytest.approx([0.625, 0.375])
    lse = (math.log(4) + math.log(2)) / 2  # the members' mean logsumexp (energy)
    assert torch.logsumexp(ens.super_logits, -1).item() == pytest.approx(lse)
    assert (ens.feats @ ens.bank.T).item() == pytest.approx(0.5)  # mean of the cosines 1 and 0
    assert ens.score("msp", "super").item() == pytest.approx(0.625)


def test_disagreement_is_zero_for_agreeing_members_and_the_mutual_information_otherwise():
    sure_a, sure_b = _member([[20.0, 0.0]], [[1.0, 0]], [[1.0, 0]]), _member([[0.0, 20.0]], [[1.0, 0]], [[1.0, 0]])
    assert combine([sure_a, sure_a]).score("disagreement", "sub").item() == pytest.approx(0, abs=1e-6)
    # two confident members that disagree: H(mean) = ln 2, each member's entropy ~ 0
    assert combine([sure_a, sure_b]).score("disagreement", "sub").item() == pytest.approx(-math.log(2), abs=1e-6)
    with pytest.raises(ConfigError, match="needs an ensemble"):
        sure_a.score("disagreement", "sub")


def test_members_of_different_protocols_or_banks_are_refused():
    a = _member([[1.0, 0.0]], [[1.0, 0]], [[1.0, 0]])
    other_space = Outputs(**{**a.__dict__, "space": LabelSpace((0, 1), (10, 13), (0, 1), 2, 12), "_cache": {}})
    with pytest.raises(ConfigError, match="other classes"):
        combine([a, other_space])
    other_bank = Outputs(**{**a.__dict__, "bank_sub_target": torch.tensor([1]), "_cache": {}})
    with pytest.raises(ConfigError, match="bank_sub_target"):
        combine([a, other_bank])
