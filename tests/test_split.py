"""Seeded, stratified splits and open-set hold-outs."""

import pytest
import torch

from hier_tl.data.split import make_split
from hier_tl.data.taxonomy import NOVEL


def test_deterministic_and_stratified(synth_ds):
    a, b = make_split(synth_ds, 0.25, seed=3), make_split(synth_ds, 0.25, seed=3)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert not torch.equal(a.val, make_split(synth_ds, 0.25, seed=4).val)
    assert set(a.train.tolist()).isdisjoint(a.val.tolist())
    assert len(a.train) + len(a.val) == len(synth_ds)
    for sub in set(synth_ds.subclass.tolist()):  # 16 per class -> 4 in validation each
        assert int((synth_ds.subclass[a.val] == sub).sum()) == 4


def test_holdout_subclasses_keep_their_superclass(synth_ds):
    s = make_split(synth_ds, 0.1, seed=0, holdout_subclasses=1)
    assert len(s.held_out_subs) == 3 and len(s.space.subs) == 6 and len(s.space.supers) == 3
    sup_t, sub_t = s.space.encode(synth_ds.superclass[s.val], synth_ds.subclass[s.val])
    held = torch.isin(synth_ds.subclass[s.val], torch.tensor(s.held_out_subs))
    assert (sub_t[held] == NOVEL).all() and (sup_t[held] != NOVEL).all()
    assert not torch.isin(synth_ds.subclass[s.train], torch.tensor(s.held_out_subs)).any()
    assert int(held.sum()) == 3 * 16  # every image of a held-out class goes to validation


def test_holdout_superclass_is_novel_at_both_levels(synth_ds):
    s = make_split(synth_ds, 0.1, seed=0, holdout_superclasses=1)
    assert len(s.space.supers) == 2 and len(s.space.subs) == 6
    sup_t, sub_t = s.space.encode(synth_ds.superclass[s.val], synth_ds.subclass[s.val])
    held = synth_ds.superclass[s.val] == s.held_out_supers[0]
    assert (sup_t[held] == NOVEL).all() and (sub_t[held] == NOVEL).all()
    dec_sup, dec_sub = s.space.decode(sup_t, sub_t)
    assert (dec_sup[held] == 3).all() and (dec_sub[held] == 9).all()
    assert torch.equal(dec_sup[~held], synth_ds.superclass[s.val][~held])


def test_impossible_holdout_is_refused(synth_ds):
    with pytest.raises(ValueError, match="leaves no subclass"):
        make_split(synth_ds, 0.1, holdout_subclasses=3)
    with pytest.raises(ValueError, match="leaves no superclass"):
        make_split(synth_ds, 0.1, holdout_superclasses=3)


def test_every_class_gets_a_validation_image_however_small(synth_ds):
    s = make_split(synth_ds, 0.01, seed=0)  # 1% of 16 rounds to 0: still one each
    assert len(s.val) == 9 and set(synth_ds.subclass[s.val].tolist()) == set(range(9))
    assert len(make_split(synth_ds, 0.0).val) == 0  # 0 means no validation (the refit case)


def test_rotating_folds_hold_out_every_superclass_once_and_redraw_subclasses(synth_ds):
    plain = make_split(synth_ds, 0.1, seed=0, holdout_subclasses=1, holdout_superclasses=1)
    folds = [make_split(synth_ds, 0.1, seed=0, holdout_subclasses=1, holdout_superclasses=1, fold=f) for f in range(3)]
    assert torch.equal(folds[0].val, plain.val) and folds[0].held_out_subs == plain.held_out_subs  # fold 0 = plain
    assert sorted(s for f in folds for s in f.held_out_supers) == sorted(set(synth_ds.superclass.tolist()))
    assert len({f.held_out_subs for f in folds}) > 1  # fresh subclass draws
    for f in folds:  # each fold is a valid open-set split
        assert set(f.train.tolist()).isdisjoint(f.val.tolist())
        assert not torch.isin(synth_ds.superclass[f.train], torch.tensor(f.held_out_supers)).any()
    again = make_split(synth_ds, 0.1, seed=0, holdout_subclasses=1, holdout_superclasses=1, fold=2)
    assert torch.equal(again.val, folds[2].val)  # deterministic per (seed, fold)
