"""results.runcache: trials that differ only in novelty keys share one training run; a later trial replays the
stored epochs re-scored as its own, and never replays a cache with a gap or a checkpoint of another epoch."""

import pytest
import torch

from hier_tl.data.taxonomy import LabelSpace
from hier_tl.results.runcache import RunCache
from hier_tl.train import checkpoint
from hier_tl.train.outputs import Outputs
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import EpochReport

CFG = TrainConfig(backbone="cnn_tiny", epochs=3, threshold=0.6, novelty_score="msp")
SPACE = LabelSpace(supers=(0, 1), subs=(0, 1), sub_parent=(0, 1), novel_super=2, novel_sub=2)


def report(epoch: int) -> EpochReport:
    """What `fit` reports after `epoch`: metrics (training and validation), outputs and a checkpoint."""
    state = {"model": {"w": torch.full((2,), float(epoch))}, "epoch": epoch, "config": CFG.to_dict(),
             "space": SPACE.to_dict(), "history": [{"epoch": e} for e in range(1, epoch + 1)], "norm": ((0.5,), (0.5,))}
    metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "train_time": 3.0,
               "epoch_time": 4.0, "images_per_s": 50.0, "current_lr": 0.001, "seen_super_acc": 0.9}
    outputs = Outputs(torch.full((3, 2), float(epoch)), torch.zeros(3, 2), torch.tensor([0, 1, 0]),
                      torch.tensor([0, -1, 1]), SPACE)
    return EpochReport(metrics, outputs, lambda p: checkpoint.save(state, p), lambda: state)


def stored(root, epochs: int = 2) -> RunCache:
    cache = RunCache(root, CFG)
    assert cache.acquire()
    for e in range(1, epochs + 1):
        cache.store(report(e))
    cache.release()
    return cache


def test_only_novelty_keys_may_differ_between_trials_sharing_a_run(tmp_path):
    same = RunCache(tmp_path, CFG).dir
    assert RunCache(tmp_path, CFG.replace(threshold="tpr:0.9", novelty_score="energy")).dir == same
    for change in ({"lr": 0.01}, {"seed": 1}, {"epochs": 4}, {"holdout_subclasses": 1}):
        assert RunCache(tmp_path, CFG.replace(**change)).dir != same, change
    assert same.parent == tmp_path


def test_one_trial_at_a_time_writes_a_run(tmp_path):
    a, b = RunCache(tmp_path, CFG), RunCache(tmp_path, CFG.replace(threshold=0.9))
    assert a.acquire() and a.owner
    assert not b.acquire() and not b.owner
    b.release()  # not the owner: leaves a's claim alone
    assert (a.dir / "owner").is_file()
    a.release()
    assert b.acquire()


def test_stored_epochs_are_replayed_rescored_as_the_own_epochs_of_a_later_trial(tmp_path):
    cache = stored(tmp_path)
    assert cache.epochs() == [1, 2] and cache.checkpoint() == cache.dir / "checkpoint.pt"
    mine = CFG.replace(threshold=0.9)
    sent = []
    resume = RunCache(tmp_path, mine).replay(
        mine, lambda out: {"rescored": float(out.super_logits.sum()), "threshold_super": 0.9},
        lambda m, out, own: sent.append((m, out, own)))
    assert [m["epoch"] for m, _, _ in sent] == [1, 2]
    first = sent[0][0]
    assert first == {"epoch": 1, "train_loss": 1.0, "val_loss": 2.0, "train_time": 3.0, "images_per_s": 50.0,
                     "current_lr": 0.001, "rescored": 6.0, "threshold_super": 0.9, "epoch_time": 0.0,
                     "replayed": True}  # validation metrics re-scored; no time spent; stored ones dropped
    assert sent[1][0]["rescored"] == 12.0 and torch.equal(sent[1][1].sub_target, torch.tensor([0, -1, 1]))
    assert sent[0][2] is None  # only the last replayed epoch carries a checkpoint
    own = sent[1][2]
    assert own["epoch"] == 2 and own["config"] == mine.to_dict() and [h["epoch"] for h in own["history"]] == [1, 2]
    assert resume["epoch"] == 2 and resume["config"] == mine.to_dict() and len(resume["history"]) == 2
    assert torch.equal(resume["model"]["w"], torch.full((2,), 2.0))


def _gap(c):
    (c.dir / "epoch_1.pt").unlink()


def _killed_before_the_epoch_file(c):
    (c.dir / "epoch_2.pt").unlink()  # the checkpoint is already epoch 2's


def _no_checkpoint(c):
    (c.dir / "checkpoint.pt").unlink()


@pytest.mark.parametrize("damage", [_gap, _killed_before_the_epoch_file, _no_checkpoint])
def test_nothing_is_replayed_from_an_incomplete_cache(tmp_path, damage):
    damage(stored(tmp_path))
    sent = []
    assert RunCache(tmp_path, CFG).replay(CFG, lambda out: {}, lambda *a: sent.append(a)) is None
    assert sent == []


def test_an_empty_cache_has_nothing(tmp_path):
    cache = RunCache(tmp_path, CFG)
    assert cache.epochs() == [] and cache.checkpoint() is None
    assert cache.replay(CFG, lambda out: {}, lambda *a: None) is None
