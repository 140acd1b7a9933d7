"""predict.discovery: `predict --discover` clusters the folder's images with the training bank, says what it
found, and refuses a checkpoint that keeps no features to cluster."""

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
    assert "novel-subclass cluster(s)" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == len(list((synth_dir / "test_images").iterdir()))


def test_discover_takes_a_cluster_count_auto_or_nothing():
    from hier_tl.cli import build_parser
    from hier_tl.train.clusters import NEW_CLUSTERS

    base = ["predict", "r", "--images", "i", "--out", "o"]
    parse = build_parser().parse_args
    assert parse(base).discover is None  # off unless asked
    assert parse([*base, "--discover"]).discover == "default"
    assert parse([*base, "--discover", "4"]).discover == 4 and parse([*base, "--discover", "auto"]).discover == "auto"
    with pytest.raises(SystemExit):
        parse([*base, "--discover", "0"])
    predict = next(a for a in build_parser()._subparsers._group_actions[0].choices["predict"]._actions
                   if a.dest == "discover")
    assert f"default {NEW_CLUSTERS}" in predict.help  # the help names the default the library uses
