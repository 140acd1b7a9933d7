"""CUDA paths (bf16 autocast, channels_last, device-resident data). Run by bench/gpu_check.sh on a GPU."""

import pytest
import torch

from hier_tl.train import checkpoint
from hier_tl.train.train_config import TrainConfig
from hier_tl.train.trainer import fit, infer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fit_on_cuda_and_predict_on_cpu(synth_ds, tmp_path):
    saved = {}
    res = fit(TrainConfig(backbone="resnet18", epochs=2, batch_size=32, device="cuda"), synth_ds,
              lambda r: saved.__setitem__("p", r.save(tmp_path)))
    assert res.history[-1]["seen_super_acc"] > 0.4
    assert next(res.model.parameters()).is_cuda
    model, cfg, space, norm = checkpoint.model_from(checkpoint.load(saved["p"]), "cpu")
    a = infer(model, synth_ds.images[:8], norm, 64, precision="fp32")
    assert a[0].shape == (8, 3) and torch.isfinite(a[0]).all()


def test_the_dataset_lives_on_the_gpu_as_uint8_and_bf16_is_on(synth_ds):
    from hier_tl.train.trainer import _prepare, use_bf16

    run = _prepare(TrainConfig(backbone="cnn_tiny", device="cuda"), synth_ds, ())
    assert run.X.is_cuda and run.X.dtype == torch.uint8 and run.train.is_cuda
    assert use_bf16(run.X.device, "auto")
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_training_epoch_never_waits_for_the_gpu(synth_ds):
    """No host sync inside the step loop (augmentation, mixup, loss, optimiser, schedule): the CPU queues
    the whole epoch; the one sync per epoch is reading the summed loss afterwards."""
    import warnings

    from hier_tl.train.trainer import _prepare, train_one_epoch, use_bf16

    cfg = TrainConfig(backbone="resnet18", device="cuda", batch_size=32, mixup_alpha=0.2, translate=0.1)
    run = _prepare(cfg, synth_ds, ())
    args = (run.model, run.opt, run.sched, run.X, run.y_sup, run.y_sub, run.train, cfg, run.norm, run.size,
            run.X.device, use_bf16(run.X.device))
    train_one_epoch(*args)  # warm-up: cached constants are copied to the device once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = train_one_epoch(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert not syncs, syncs[:3]
    assert torch.isfinite(loss)

