"""CUDA paths (bf16 autocast, channels_last, device-resident data). Run by bench/gpu_check.sh on a GPU."""

import pytest
import torch

from hier_tl.config import TrainConfig
from hier_tl import checkpoint
from hier_tl.train import fit, infer

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
