"""results.runfolder: `hier-tl train --out DIR` leaves a complete, readable run folder after every epoch."""

import pandas as pd
import pytest
import torch

from hier_tl.core.errors import StorageError
from hier_tl.results.runfolder import train_to_folder
from hier_tl.train import checkpoint
from hier_tl.train.outputs import Outputs
from hier_tl.train.train_config import TrainConfig, load_train_config


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from hier_tl.data.dataset import load_dataset
    from hier_tl.data.synthetic import SynthSpec, synthesize
    return load_dataset(synthesize(tmp_path_factory.mktemp("tiny"), SynthSpec(n_super=2, subs_per_super=2, per_class=6,
                                                                             test_per_class=1, size=16, seed=1)))


@pytest.mark.slow
def test_every_epoch_leaves_a_complete_run_folder(tiny_ds, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(backbone="cnn_tiny", epochs=2, batch_size=8, val_fraction=0.34, holdout_subclasses=1,
                      threshold="tpr:0.9", precision="fp32")
    seen = []

    def log(line: str) -> None:  # called once an epoch's files are in place: they must agree with each other
        seen.append(line)
        if line.startswith("epoch "):
            epoch = len([s for s in seen if s.startswith("epoch ")])
            assert list(pd.read_parquet(out / "metrics.parquet").epoch) == list(range(1, epoch + 1))
            assert checkpoint.load(out)["epoch"] == epoch
    result = train_to_folder(cfg, tiny_ds, out, log=log)

    assert [s.split("  ")[0] for s in seen[:2]] == ["epoch 1/2", "epoch 2/2"] and "img/s" in seen[0]
    assert seen[2] == f"wrote {out}/config.yaml, metrics.parquet, val_outputs.pt, checkpoint.pt"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.parquet",
                                                     "val_outputs.pt"]  # no temporary file left
    assert load_train_config(out / "config.yaml") == cfg
    df = pd.read_parquet(out / "metrics.parquet")
    assert (df.threshold == "tpr:0.9").all() and (df.backbone == "cnn_tiny").all()  # the config beside each row
    assert {"seed", "hier_tl_version", "git_commit", "train_loss", "objective"} <= set(df.columns)
    assert list(df.train_loss) == pytest.approx([h["train_loss"] for h in result.history])
    saved = Outputs.from_dict(torch.load(out / "val_outputs.pt", weights_only=True))
    assert torch.equal(saved.sub_logits, result.outputs.sub_logits) and saved.space == result.space
    assert len(checkpoint.load(out / "checkpoint.pt")["history"]) == 2


def test_an_unwritable_run_folder_fails_before_any_training(tmp_path):
    (tmp_path / "taken").write_text("a file where the run folder should go")
    with pytest.raises((OSError, StorageError)):  # the CLI prints either as one line
        train_to_folder(TrainConfig(), data=None, out=tmp_path / "taken")  # no data: training would fail otherwise
    assert (tmp_path / "taken").read_text() == "a file where the run folder should go"
