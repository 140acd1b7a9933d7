"""train.registries: each registry fills from the modules it names (only when first used), and every entry
carries the metadata the code reading it expects (and no misspelt key)."""

import subprocess
import sys

import pytest

from hier_tl.train.registries import (
    BACKBONES,
    EPOCH_METRICS,
    OPTIMIZERS,
    SCHEDULES,
    SCORES,
)

LOGIT_SCORES = ["energy", "maxlogit", "msp"]
REFERENCE_SCORES = ["pretrained_hgauss", "pretrained_hier", "pretrained_hier_hgauss", "pretrained_knn",
                    "pretrained_mahalanobis"]
FEATURE_SCORES = ["disagreement", "fusion", "hier", "knn", "knn_backbone", "mahalanobis", *REFERENCE_SCORES, "vim"]

REGISTRIES = {  # registry: (its entries, the metadata keys the code reads)
    "BACKBONES": (BACKBONES, ["cnn", "cnn_tiny", "efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1",
                              "efficientnet_lite2", "resnet18"], {"imagenet", "act_mult", "gpu_bf16"}),
    "SCORES": (SCORES, sorted(LOGIT_SCORES + FEATURE_SCORES), {"features", "same_levels", "reference"}),
    "OPTIMIZERS": (OPTIMIZERS, ["adamw", "sgd"], set()),
    "SCHEDULES": (SCHEDULES, ["constant", "cosine"], set()),
    "EPOCH_METRICS": (EPOCH_METRICS, ["current_lr", "epoch_time", "images_per_s", "train_loss", "train_time",
                                      "val_loss"], {"label", "fmt", "mode"}),
}


def defined_in(obj) -> str:
    return getattr(obj, "func", obj).__module__  # functools.partial entries: their function's module


@pytest.mark.parametrize("name", REGISTRIES)
def test_each_registry_holds_its_entries_defined_in_the_modules_it_names(name):
    reg, entries, meta_keys = REGISTRIES[name]
    assert reg.names() == entries
    for entry in entries:
        assert defined_in(reg.get(entry)) in reg._modules, entry
        unknown = set(reg.meta(entry)) - meta_keys
        assert not unknown, f"{name} {entry}: metadata {unknown} is read by nothing"


def test_backbones_say_which_have_imagenet_weights_and_how_much_memory_they_take():
    assert BACKBONES.names(imagenet=True) == ["efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1",
                                              "efficientnet_lite2", "resnet18"]
    assert all(isinstance(BACKBONES.meta(n)["act_mult"], int) and BACKBONES.meta(n)["act_mult"] > 0 for n in BACKBONES)
    assert BACKBONES.meta("cnn_tiny")["act_mult"] < BACKBONES.meta("cnn")["act_mult"] < \
        BACKBONES.meta("efficientnet_b0")["act_mult"]
    assert BACKBONES.names(gpu_bf16=False) == ["efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1",
                                               "efficientnet_lite2"]


def test_novelty_scores_say_what_they_need():
    assert sorted(SCORES.names(features=True)) == sorted(FEATURE_SCORES)
    assert SCORES.names(reference=True) == REFERENCE_SCORES
    same = SCORES.names(same_levels=True)
    assert same == ["knn", "knn_backbone", "mahalanobis", "pretrained_hgauss", "pretrained_knn",
                    "pretrained_mahalanobis"]
    assert set(same) <= set(FEATURE_SCORES)  # a logit score reads one level's logits: it differs per level


def test_epoch_metrics_say_their_direction_and_their_table_column():
    assert {"epoch_time", "train_loss", "train_time", "val_loss"} <= set(EPOCH_METRICS.names(mode="min"))
    assert EPOCH_METRICS.meta("images_per_s") == {"label": "img/s", "fmt": "{:.0f}"}  # higher is better
    assert EPOCH_METRICS.meta("images_per_s")["fmt"].format(1234.56) == "1235"


@pytest.mark.slow
def test_importing_the_registries_imports_none_of_the_modules_that_fill_them():
    code = ("import sys\nfrom hier_tl.train import registries as r\n"
            "mods = ['hier_tl.train.models', 'hier_tl.train.novelty', 'hier_tl.train.scores', 'hier_tl.train.optim', "
            "'hier_tl.train.metrics']\n"
            "print([m in sys.modules for m in mods])\nr.OPTIMIZERS.names()\n"
            "print([m in sys.modules for m in mods])\nr.SCORES.names()\nprint([m in sys.modules for m in mods])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[False, False, False, False, False]",
                                          "[False, False, False, True, False]",  # optim only
                                          "[False, True, True, True, False]"]
