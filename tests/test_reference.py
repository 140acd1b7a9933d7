"""Reference features: a frozen ImageNet backbone's view of the images, computed once and cached."""

import os
import subprocess
import sys

import pytest
import torch

from hier_tl.train import reference
from hier_tl.train.models import build_backbone
from hier_tl.train.train_config import TrainConfig


def test_features_are_the_frozen_imagenet_backbone_and_are_cached_per_images(synth_ds, monkeypatch, tmp_path):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path))
    x = synth_ds.images[:6]
    f = reference.features(x, "efficientnet_lite0", 32)
    bb = build_backbone("efficientnet_lite0", "imagenet")  # ImageNet weights, never fine-tuned
    from hier_tl.train import augment

    with torch.no_grad():
        want = bb.module.eval()(augment.to_input(x, 32, bb.norm))
    assert f.shape == (6, 1280) and torch.allclose(f, want, atol=1e-4)
    assert len(list((tmp_path / "reference").glob("*.npy"))) == 1

    def boom(*a, **k):
        raise AssertionError("computed again")
    monkeypatch.setattr(reference, "_compute", boom)
    assert torch.equal(reference.features(x, "efficientnet_lite0", 32), f)  # the same images: from the cache
    with pytest.raises(AssertionError, match="computed again"):  # other images, or another size: computed
        reference.features(synth_ds.images[:5], "efficientnet_lite0", 32)
    with pytest.raises(AssertionError, match="computed again"):
        reference.features(x, "efficientnet_lite0", 48)


def test_computing_the_features_leaves_the_random_stream_as_reading_them_does(synth_ds, monkeypatch, tmp_path):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path))
    x = synth_ds.images[:2]
    for how in ("computed", "read"):  # building the backbone draws from a generator of its own
        torch.manual_seed(0)
        reference.features(x, "efficientnet_lite0", 32)
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(0))), how


def test_an_unreadable_cache_entry_is_computed_again(synth_ds, monkeypatch, tmp_path):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path))
    x = synth_ds.images[:3]
    f = reference.features(x, "efficientnet_lite0", 32)
    (entry,) = (tmp_path / "reference").glob("*.npy")
    entry.write_bytes(b"truncated")
    assert torch.allclose(reference.features(x, "efficientnet_lite0", 32), f)


def test_the_reference_must_have_imagenet_weights():
    with pytest.raises(ValueError, match="reference_backbone: 'cnn_tiny' has no ImageNet weights"):
        TrainConfig(reference_backbone="cnn_tiny").validate()
    with pytest.raises(ValueError, match="unknown backbone"):
        TrainConfig(reference_backbone="nope").validate()
    with pytest.raises(ValueError, match="reference_size: 0 is out of range"):
        TrainConfig(reference_size=0).validate()


def test_processes_starting_together_compute_the_features_once(synth_ds, tmp_path):
    """Trials of a sweep start at once on one machine: one computes, the others wait and read the cache."""
    torch.save(synth_ds.images[:4].clone(), tmp_path / "x.pt")
    code = ("import sys, torch; from hier_tl.train import reference; x = torch.load(sys.argv[1]); calls = []; "
            "real = reference._compute; reference._compute = lambda *a: calls.append(1) or real(*a); "
            "reference.features(x, 'efficientnet_lite0', 32); print(len(calls))")
    env = {**os.environ, "HIER_TL_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "x.pt")], stdout=subprocess.PIPE,
                              env=env, text=True) for _ in range(3)]
    outs = [p.communicate()[0].strip() for p in procs]
    assert sorted(outs) == ["0", "0", "1"]
