"""Typed config: YAML in, unknown keys and wrong types refused with the key named, --set overrides."""

import pytest

from hier_tl.core.config import ConfigError
from hier_tl.train.train_config import TrainConfig, load_train_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("backbone: resnet18\nlr: 0.01\nepochs: 3\n")
    cfg = load_train_config(p, ["lr=3e-4", "mixup_alpha=0.2", "threshold=tpr:0.9", "hflip=false"])
    assert (cfg.backbone, cfg.lr, cfg.epochs, cfg.mixup_alpha, cfg.threshold, cfg.hflip) == \
        ("resnet18", 3e-4, 3, 0.2, "tpr:0.9", False)
    assert isinstance(load_train_config(None, ["lr=1"]).lr, float)  # ints widen to float


@pytest.mark.parametrize("text,needle", [
    ("lerning_rate: 0.1\n", "lerning_rate"),
    ("epochs: ten\n", "epochs"),
    ("hflip: 3\n", "hflip"),
    ("backbone: vgg\n", "backbone"),
    ("depth: half\n", "depth"),
    ("threshold: tpr:2\n", "threshold"),
    ("threshold: high\n", "threshold"),
    ("batch_size: 0\n", "batch_size"),
    ("translate: 0.7\n", "translate"),
    ("tta: maybe\n", "tta"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_train_config(p)


def test_replace_validates():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig().replace(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="--set"):
        load_train_config(None, ["lr"])
