"""Backbone-feature scores (knn_backbone, mahalanobis, vim), their fusion and the hierarchy-aware rule:
each re-scores saved outputs, ranks the unfamiliar below the familiar, and predicts from a checkpoint as
it validated."""

import dataclasses
import io

import pytest
import torch

from hier_tl.train import metrics, novelty
from hier_tl.train.outputs import Outputs
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import fit

NEW = ("knn_backbone", "mahalanobis", "vim", "fusion", "hier")


def _bank_outputs(queries_back, queries_proj=None, seed=0):
    """Three tight clusters (one per subclass) in a 16-d backbone space and an 8-d projection."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(16)[:3] * 4
    labels = torch.arange(3).repeat_interleave(40)
    back = centres[labels] + 0.1 * torch.randn(120, 16, generator=g)
    proj = back[:, :8]
    logits = torch.nn.functional.one_hot(labels, 3).float() * 5
    qp = queries_back[:, :8] if queries_proj is None else queries_proj
    q_logits = qp[:, :3] * 1.25
    return Outputs(q_logits, q_logits, feats=qp, backbone_feats=queries_back, bank=proj, bank_backbone=back,
                   bank_super_logits=logits, bank_sub_logits=logits, bank_sub_target=labels)


def test_every_new_score_ranks_a_far_image_below_a_near_one():
    near = torch.eye(16)[:1] * 4 + 0.05
    far = torch.full((1, 16), 1.0)
    out = _bank_outputs(torch.cat([near, far]))
    for name in NEW:
        for level in ("super", "sub"):
            s = out.score(name, level)
            assert s[0] > s[1], (name, level, s)


def test_mahalanobis_is_class_conditional():
    """Between two clusters is far from both means, though close to the bank's overall mean."""
    between = (torch.eye(16)[0] * 4 + torch.eye(16)[1] * 4)[None] / 2
    centre = torch.eye(16)[:1] * 4
    s = _bank_outputs(torch.cat([centre, between])).score("mahalanobis", "sub")
    assert s[0] > s[1]


def test_vim_penalises_the_residual_outside_the_principal_subspace():
    inside = torch.zeros(1, 16)
    inside[0, 0] = 4
    outside = inside.clone()
    outside[0, 7] = 3  # projection dim 7: no bank variance there
    proj = torch.cat([inside[:, :8], outside[:, :8]])
    out = _bank_outputs(torch.cat([inside, inside]), proj)
    out = Outputs(torch.zeros(2, 3), torch.zeros(2, 3), **{k: getattr(out, k) for k in (
        "feats", "backbone_feats", *Outputs.BANK_FIELDS)})  # equal energies: only the residual differs
    s = out.score("vim", "sub")
    assert s[0] > s[1]


def test_fusion_is_standardised_on_the_bank_and_hier_takes_the_lower_level():
    out = _bank_outputs(torch.eye(16)[:3] * 4)
    fused = out.score("fusion", "sub")
    assert fused.abs().max() < 5  # z-scores, not raw distances
    sup, sub = out.score("hier", "super"), out.score("hier", "sub")
    assert torch.equal(sub, fused) and (sup <= sub + 1e-6).all()
    assert out.score("mahalanobis", "super") is out.score("mahalanobis", "sub")  # distance scores: computed once


def test_a_feature_score_on_outputs_without_a_bank_says_what_is_missing():
    with pytest.raises(ValueError, match="needs features and a training-feature bank"):
        Outputs(torch.zeros(1, 2), torch.zeros(1, 3)).score("mahalanobis", "super")
    old = Outputs(torch.zeros(1, 2), torch.zeros(1, 3), feats=torch.zeros(1, 4), bank=torch.zeros(5, 4))
    with pytest.raises(ValueError, match="older checkpoints"):
        old.score("mahalanobis", "super")


def test_scores_are_recomputed_from_saved_outputs_and_predict_reproduces_validation(synth_ds, tmp_path):
    cfg = TrainConfig(backbone="cnn_tiny", epochs=2, batch_size=32, val_fraction=0.25, holdout_subclasses=1,
                      novelty_score="hier", threshold="tpr:0.95")
    saved = {}
    res = fit(cfg, synth_ds, lambda r: saved.update(p=r.save(tmp_path), out=r.outputs.to_dict()), scores=NEW)
    m = res.history[-1]
    again = Outputs.from_dict(_roundtrip(saved["out"]))  # as val_outputs.pt holds them
    seen = again.sub_target != -1
    for name in NEW:  # the reported AUROC is what the saved outputs give, with no model
        assert m[f"auroc_sub_{name}"] == pytest.approx(metrics.auroc(again.score(name, "sub"), seen))
    from hier_tl.data.split import make_split
    from hier_tl.predict.predict import Predictor

    p = Predictor.from_checkpoint(saved["p"])
    val = make_split(synth_ds, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses).val
    sup, sub = p.predict(synth_ds.images[val], progress=False)
    want = res.space.decode(*novelty.predict(res.outputs, res.space, "hier", m["threshold_super"],
                                             m["threshold_sub"]))
    assert torch.equal(sup, want[0]) and torch.equal(sub, want[1])


def _roundtrip(d: dict) -> dict:
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


PRETRAINED = ("pretrained_knn", "pretrained_mahalanobis", "pretrained_hier")


def test_pretrained_scores_measure_the_reference_features_and_pretrained_hier_splits_the_levels():
    near, far = torch.eye(16)[:1] * 4 + 0.05, torch.full((1, 16), 1.0)
    out = _bank_outputs(torch.cat([near, near]))  # the fine-tuned features cannot tell them apart
    # the reference is another space (here: the dimensions reversed); queries must be scored in it
    out = dataclasses.replace(out, ref_feats=torch.cat([near, far]).flip(1), bank_ref=out.bank_backbone.flip(1))
    for name in ("pretrained_knn", "pretrained_mahalanobis"):
        s = out.score(name, "super")
        assert s[0] > s[1], (name, s)
    assert torch.equal(out.score("pretrained_hier", "super"), out.score("pretrained_mahalanobis", "super"))
    assert torch.equal(out.score("pretrained_hier", "sub"), out.score("fusion", "sub"))
    with pytest.raises(ValueError, match="ref_feats"):
        _bank_outputs(near).score("pretrained_knn", "super")


def test_pretrained_scores_train_and_predict_from_the_checkpoint_as_validated(synth_ds, tmp_path):
    """The reference features are computed at training time for validation and the bank, kept in the
    checkpoint's bank, and computed again for new images at prediction: decisions match validation."""
    cfg = TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25, holdout_superclasses=1,
                      novelty_score="pretrained_hier", threshold="tpr:0.95", reference_size=32, precision="fp32")
    saved = {}
    res = fit(cfg, synth_ds, lambda r: saved.update(p=r.save(tmp_path), out=r.outputs.to_dict()), scores=PRETRAINED)
    m = res.history[-1]
    again = Outputs.from_dict(_roundtrip(saved["out"]))
    assert again.ref_feats.shape == (len(again.super_logits), 1280)  # efficientnet_lite0's features
    for name in PRETRAINED:
        seen = again.super_target != -1
        assert m[f"auroc_super_{name}"] == pytest.approx(metrics.auroc(again.score(name, "super"), seen))
    from hier_tl.data.split import make_split
    from hier_tl.predict.predict import Predictor
    from hier_tl.train import checkpoint

    assert checkpoint.load(saved["p"])["bank"]["bank_ref"].shape[1] == 1280
    p = Predictor.from_checkpoint(saved["p"])
    val = make_split(synth_ds, cfg.val_fraction, cfg.split_seed, holdout_superclasses=1).val
    sup, sub = p.predict(synth_ds.images[val], progress=False)
    want = res.space.decode(*novelty.predict(res.outputs, res.space, cfg.novelty_score, m["threshold_super"],
                                             m["threshold_sub"]))
    assert torch.equal(sup, want[0]) and torch.equal(sub, want[1])


def test_pretrained_hgauss_keeps_a_plausible_new_member_of_a_superclass():
    """Subclasses 0-2 (superclass 0) spread over axes 0-2, subclasses 3-5 (superclass 1) over axes 3-5. An image
    at the centre of superclass 0's subclasses is far from each of them, as far as one mixing axes of both
    superclasses; the hierarchical Gaussian keeps the
    first (a new breed among its siblings) above the second, which nearest-subclass Mahalanobis ranks higher.
    It never scores below the nearest-subclass term."""
    from hier_tl.data.taxonomy import LabelSpace

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(40)
    bank = torch.eye(16)[labels] * 4 + 0.3 * torch.randn(240, 16, generator=g)
    centre = torch.zeros(1, 16)
    centre[0, :3] = 4 / 3
    mixed = torch.zeros(1, 16)
    mixed[0, [0, 3, 4]] = 4 / 3
    space = LabelSpace((0, 1), tuple(range(6)), (0, 0, 0, 1, 1, 1), 2, 6)
    out = Outputs(torch.zeros(2, 2), torch.zeros(2, 6), space=space, feats=torch.zeros(2, 1), bank=torch.zeros(240, 1),
                  ref_feats=torch.cat([centre, mixed]), bank_ref=bank, bank_sub_target=labels)
    maha, hg = out.score("pretrained_mahalanobis", "super"), out.score("pretrained_hgauss", "super")
    assert maha[0] < maha[1] and hg[0] > hg[1] + 1
    assert (hg >= 0.5 * maha - 1e-4).all()
    assert torch.equal(out.score("pretrained_hier_hgauss", "super"), hg)
