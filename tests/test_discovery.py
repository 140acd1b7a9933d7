"""predict.discovery: `predict --discover` compares the folder's images with the training bank in place of the
subclass threshold, says what it found, and refuses a checkpoint that keeps no features to compare."""

import pandas as pd
import pytest
import torch

from hier_tl.core.errors import SelectionError
from hier_tl.predict.discovery import discover_in
from hier_tl.train.outputs import Outputs


def test_discovery_needs_backbone_features_and_a_bank():
    out = Outputs(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(SelectionError, match="feature novelty score"):
        discover_in(out, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.slow
def test_predict_discover_from_a_run_folder(synth_ds, synth_dir, tmp_path, capsys):
    from hier_tl.cli import main
    from hier_tl.train.train_config import TrainConfig
    from hier_tl.train.trainer import fit

    cfg = TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25, holdout_subclasses=1,
                      novelty_score="knn_backbone", threshold="tpr:0.95")
    run = tmp_path / "run"
    fit(cfg, synth_ds, lambda r: r.save(run))
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--images", str(synth_dir / "test_images"), "--out", str(out), "--discover"]) == 0
    said = capsys.readouterr()
    assert "novel-subclass group(s)" in said.err and "decided by each image's neighbours" in said.err
    assert "subclass by neighbours (--discover)" in said.out  # the subclass threshold is not what decided
    assert len(pd.read_csv(out)) == len(list((synth_dir / "test_images").iterdir()))


def test_discover_takes_a_cluster_count_auto_or_nothing():
    from hier_tl.cli import build_parser

    base = ["predict", "r", "--images", "i", "--out", "o"]
    parse = build_parser().parse_args
    assert parse(base).discover is None  # off unless asked
    assert parse([*base, "--discover"]).discover == "default"
    assert parse([*base, "--discover", "4"]).discover == 4 and parse([*base, "--discover", "auto"]).discover == "auto"
    with pytest.raises(SystemExit):
        parse([*base, "--discover", "0"])
    predict = next(a for a in build_parser()._subparsers._group_actions[0].choices["predict"]._actions
                   if a.dest == "discover")
    assert "neighbours" in predict.help and "k-means" in predict.help


def test_discovery_replaces_the_subclass_threshold():
    """With --discover the subclass level is the neighbour rule's: images a subclass threshold would all call
    novel (msp <= 1 < 2), sitting among training images of their subclass, keep their subclass."""
    from hier_tl.data.taxonomy import LabelSpace
    from hier_tl.predict.predict import decide

    space = LabelSpace((0,), (10, 11), (0, 0), 1, 12)
    g = torch.Generator().manual_seed(0)
    bank = torch.eye(8)[:2].repeat_interleave(20, 0) * 4 + 0.3 * torch.randn(40, 8, generator=g)
    feats = torch.eye(8)[:2].repeat_interleave(10, 0) * 4 + 0.3 * torch.randn(20, 8, generator=g)
    out = Outputs(torch.ones(20, 1), torch.eye(2).repeat_interleave(10, 0) * 5, space=space, backbone_feats=feats,
                  bank_backbone=bank, bank_sub_target=torch.arange(2).repeat_interleave(20))
    assert (decide(out, "msp", -1.0, 2.0)[1] == 12).all()  # the threshold alone: all novel
    sups, subs = decide(out, "msp", -1.0, 2.0, discover="default")
    assert (sups == 0).all() and (subs == torch.tensor([10] * 10 + [11] * 10)).float().mean() >= 0.9


def test_a_small_folder_is_warned_about(capsys):
    """Discovery learns from the folder itself: a handful of images gives it little to go on, and it says so."""
    g = torch.Generator().manual_seed(0)
    from hier_tl.data.taxonomy import LabelSpace

    space = LabelSpace((0,), (10, 11), (0, 0), 1, 12)
    bank = torch.eye(8)[:2].repeat_interleave(20, 0) * 4 + 0.3 * torch.randn(40, 8, generator=g)
    out = Outputs(torch.ones(5, 1), torch.eye(2)[[0, 1, 0, 1, 0]] * 5, space=space, backbone_feats=bank[:5] + 0.1,
                  bank_backbone=bank, bank_sub_target=torch.arange(2).repeat_interleave(20))
    discover_in(out, torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 0, 1, 0]))
    assert "5 image(s) give it little to go on" in capsys.readouterr().err
