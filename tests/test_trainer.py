"""The shared trainer: it learns, reports every epoch, checkpoints exactly, resumes and refuses NaNs."""

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from hier_tl.cli import main
from hier_tl.core.errors import DivergedError
from hier_tl.train import augment, checkpoint, metrics, novelty, trainer
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import fit, infer, place

FAST = dict(backbone="cnn_tiny", batch_size=32, lr=3e-3, val_fraction=0.25, eval_batch_size=256)


@pytest.fixture(scope="module")
def learn_ds(tmp_path_factory):
    from hier_tl.data.dataset import load_dataset
    from hier_tl.data.synthetic import SynthSpec, synthesize
    return load_dataset(synthesize(tmp_path_factory.mktemp("learn"), SynthSpec(subs_per_super=3, per_class=60,
                                                                               test_per_class=1, seed=3)))


def test_a_few_epochs_beat_chance_by_a_wide_margin(learn_ds):
    seen = []
    res = fit(TrainConfig(epochs=5, threshold=0.0, **FAST), learn_ds, lambda r: seen.append(r.metrics))
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4, 5] and len(res.history) == 5
    last = seen[-1]
    assert last["seen_super_acc"] > 0.6 and last["seen_sub_acc"] > 0.35, last  # chance: 1/3 and 1/9
    assert last["train_loss"] < seen[0]["train_loss"]
    for key in ("val_loss", "images_per_s", "epoch_time", "auroc_sub_msp", "fpr95_super_energy", "objective"):
        assert key in last


def test_checkpoint_round_trip_gives_identical_logits(synth_ds, tmp_path):
    saved = {}

    def report(r):
        saved["path"] = r.save(tmp_path)
    res = fit(TrainConfig(epochs=1, **FAST), synth_ds, report)
    model, cfg, space, norm = checkpoint.model_from(checkpoint.load(saved["path"]))
    a = infer(res.model, synth_ds.images[:20], res.norm, 64)
    b = infer(model, synth_ds.images[:20], norm, 64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert space == res.space and cfg.backbone == "cnn_tiny"


def test_tta_averages_each_image_with_its_mirror_image(synth_ds):
    res = fit(TrainConfig(epochs=1, precision="fp32", **FAST), synth_ds)
    x = synth_ds.images[:12]
    plain, mirrored = infer(res.model, x, res.norm, 64, precision="fp32"), infer(res.model, x.flip(3), res.norm, 64, precision="fp32")
    both = infer(res.model, x, res.norm, 64, precision="fp32", tta=True)
    for i in range(3):  # superclass logits, subclass logits, features
        torch.testing.assert_close(both[i], (plain[i] + mirrored[i]) / 2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(both[1], plain[1])  # a mirror image is not the same input
    # the same images mirrored give the same TTA output: the prediction no longer depends on the side
    torch.testing.assert_close(infer(res.model, x.flip(3), res.norm, 64, precision="fp32", tta=True)[1], both[1], rtol=1e-4, atol=1e-5)


def test_resume_continues_from_the_checkpoint_exactly(synth_ds, tmp_path):
    cfg = TrainConfig(epochs=3, mixup_alpha=0.2, **FAST)
    full = fit(cfg, synth_ds)
    ckpt = {}

    def stop_after_one(r):
        if r.metrics["epoch"] == 1:
            ckpt["p"] = r.save(tmp_path)
    fit(cfg.replace(epochs=3), synth_ds, stop_after_one)
    resumed = fit(cfg, synth_ds, resume=ckpt["p"])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-4)


def test_a_checkpoint_from_fused_gpu_kernels_resumes_on_a_cpu(synth_ds, tmp_path):
    """A GPU trial's optimiser state says fused=True; a CPU node must still resume it (with its own kernels)."""
    cfg = TrainConfig(epochs=2, **FAST)
    saved = {}
    fit(cfg.replace(epochs=1), synth_ds, lambda r: saved.__setitem__("state", r.state()))
    state = saved["state"]
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = True  # what torch.optim.AdamW(fused=True) writes on CUDA
    from hier_tl.train.trainer import _prepare, _restore

    run = _prepare(cfg, synth_ds, ())
    _restore(state, run.model, run.opt, run.sched)
    assert all(g["fused"] is None for g in run.opt.param_groups)  # the CPU's own kernels, not the GPU's
    resumed = fit(cfg, synth_ds, resume=state)
    assert [h["epoch"] for h in resumed.history] == [1, 2] and math.isfinite(resumed.history[-1]["train_loss"])


def test_nan_loss_stops_with_a_clear_error(synth_ds, monkeypatch):
    monkeypatch.setattr(augment, "to_input", lambda x, size, norm: torch.full_like(x, float("nan")))
    with pytest.raises(DivergedError, match="loss is nan at epoch 1"):
        fit(TrainConfig(epochs=2, **FAST), synth_ds)


def test_train_command_writes_the_run_folder(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), "--out", str(out), "--set", "backbone=cnn_tiny",
                 "--set", "epochs=2", "--set", "holdout_subclasses=1"]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.parquet", "val_outputs.pt", "checkpoint.pt"}
    df = pd.read_parquet(out / "metrics.parquet")
    assert list(df.epoch) == [1, 2] and (df.backbone == "cnn_tiny").all() and "git_commit" in df
    assert df.novel_sub_acc.notna().all()
    assert capsys.readouterr().out.count("epoch ") == 2
    outputs = torch.load(out / "val_outputs.pt", weights_only=True)
    assert outputs["sub_logits"].shape[1] == 6  # 9 subclasses, one per superclass held out


def test_train_command_rejects_unknown_keys(synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir), "--out", str(tmp_path), "--set", "lern_rate=1"]) == 2
    assert "lern_rate" in capsys.readouterr().err


def test_feature_score_knn_end_to_end(synth_ds, tmp_path):
    saved = {}
    res = fit(TrainConfig(epochs=1, novelty_score="knn", threshold="tpr:0.95", holdout_subclasses=1, **FAST),
              synth_ds, lambda r: saved.__setitem__("p", r.save(tmp_path)))
    m, out = res.history[-1], res.outputs
    assert out.bank is not None and out.feats is not None
    # the reported AUROC is the knn score's, computed from the saved features and the training bank
    seen = out.sub_target != -1
    assert m["auroc_sub_knn"] == pytest.approx(metrics.auroc(novelty.knn_similarity(out.feats, out.bank), seen))
    from hier_tl.data.split import make_split
    from hier_tl.predict.predict import Predictor
    p = Predictor.from_checkpoint(saved["p"])
    assert p.score == "knn" and torch.equal(p.bank["bank"], out.bank)
    # predicting the validation images from the checkpoint reproduces the validation decisions exactly
    cfg = TrainConfig(epochs=1, novelty_score="knn", threshold="tpr:0.95", holdout_subclasses=1, **FAST)
    val = make_split(synth_ds, cfg.val_fraction, cfg.split_seed, cfg.holdout_subclasses).val
    sup, sub = p.predict(synth_ds.images[val], progress=False)
    want = res.space.decode(*novelty.predict(out, res.space, "knn", m["threshold_super"], m["threshold_sub"]))
    assert torch.equal(sup, want[0]) and torch.equal(sub, want[1])
    assert (sub == res.space.novel_sub).any()  # the held-out subclass is flagged somewhere


def test_rotating_folds_train_in_lockstep_report_means_and_resume(synth_ds, tmp_path):
    cfg = TrainConfig(epochs=2, folds=3, holdout_superclasses=1, **FAST)
    reports, ckpt = [], {}

    def keep(r):
        reports.append(r)
        if r.metrics["epoch"] == 1:
            ckpt["path"] = r.save(tmp_path)  # serialised now: a state dict holds the live tensors
    full = fit(cfg, synth_ds, keep)
    r = reports[-1]
    per_fold = [metrics.evaluate(o, o.space, cfg.novelty_score, cfg.threshold) for o in r.fold_outputs]
    assert len(per_fold) == 3 and len({o.space.supers for o in r.fold_outputs}) == 3  # each fold its own heads
    assert r.metrics["novel_super_acc"] == pytest.approx(sum(m["novel_super_acc"] for m in per_fold) / 3)
    assert r.metrics["objective"] == pytest.approx(sum(m["objective"] for m in per_fold) / 3)
    assert "objective_std" in r.metrics and len(checkpoint.load(ckpt["path"])["folds"]) == 2
    resumed = fit(cfg, synth_ds, resume=ckpt["path"])
    assert resumed.history[-1]["objective"] == pytest.approx(full.history[-1]["objective"], abs=1e-6)
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-4)


def test_a_mapped_dataset_trains_as_the_same_dataset_in_memory(synth_ds):
    """load_dataset maps the decode cache; batches gathered from the mapping are the in-memory batches."""
    assert synth_ds.store is not None and not synth_ds.images.numpy().flags.owndata
    in_memory = replace(synth_ds, images=synth_ds.images.clone(), store=None)
    cfg = TrainConfig(epochs=2, mixup_alpha=0.2, **FAST)
    mapped, loaded = fit(cfg, synth_ds), fit(cfg, in_memory)
    for a, b in zip(mapped.history, loaded.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    torch.testing.assert_close(mapped.outputs.sub_logits, loaded.outputs.sub_logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_dataset_the_gpu_cannot_hold_stays_on_the_host_and_batches_are_copied(synth_ds, monkeypatch):
    cuda = torch.device("cuda")
    res = fit(TrainConfig(epochs=1, device="cuda", **FAST), synth_ds)
    rows = torch.arange(3, 40, 2)
    on_gpu = infer(res.model, place(synth_ds.images, cuda), res.norm, 64, 8, rows=rows.to(cuda))
    monkeypatch.setattr(trainer, "GPU_SHARE", 0.0)  # nothing fits: the host path
    host = place(synth_ds.images, cuda)
    assert host.device.type == "cpu"
    from_host = infer(res.model, host, res.norm, 64, 8, rows=rows)
    for a, b in zip(on_gpu, from_host):
        assert torch.equal(a, b)
    again = fit(TrainConfig(epochs=2, device="cuda", **FAST), synth_ds)
    assert math.isfinite(again.history[-1]["train_loss"]) and again.history[-1]["seen_super_acc"] > 1 / 3


def test_validation_outputs_of_a_checkpoint_match_what_its_last_epoch_saw(synth_ds):
    """A sweep trial's folds re-scored without training (bench/discovery.py --trial): resumed after its last
    epoch, `fit` gives every fold's validation outputs as the epoch that saved the checkpoint reported them."""
    cfg = TrainConfig(backbone="cnn_tiny", epochs=1, batch_size=32, val_fraction=0.25, holdout_subclasses=1, folds=2,
                      novelty_score="knn_backbone", threshold="tpr:0.95")
    seen = {}
    fit(cfg, synth_ds, lambda r: seen.update(state=r.state(), outs=r.fold_outputs))
    again = fit(cfg, synth_ds, resume=seen["state"]).fold_outputs
    assert len(again) == 2
    for a, b in zip(again, seen["outs"]):
        assert torch.equal(a.sub_target, b.sub_target)
        torch.testing.assert_close(a.sub_logits, b.sub_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.backbone_feats, b.backbone_feats, atol=1e-4, rtol=1e-4)
