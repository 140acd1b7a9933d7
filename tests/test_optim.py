"""train.optim: the optimiser a config names, with its settings, and the learning rate at every step
(linear warmup, then the named schedule), against hand-computed values."""

import math

import pytest
import torch

from hier_tl.core.errors import ConfigError
from hier_tl.train.optim import make_optimizer, make_schedule
from hier_tl.train.train_config import TrainConfig


def model() -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    m[0].requires_grad_(False)  # a frozen trunk, as depth=linear leaves it
    return m


def lrs(cfg: TrainConfig, steps_per_epoch: int, at: list[int]) -> list[float]:
    """The learning rate in force at each step in `at` (the scheduler stepped once per training step)."""
    opt = make_optimizer(cfg, model())
    sched = make_schedule(cfg, opt, steps_per_epoch)
    out = {}
    for step in range(max(at) + 1):
        out[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return [out[s] for s in at]


# lr 0.1, 4 epochs of 10 steps, 1 warmup epoch: steps 0-9 ramp (s+1)/10, then cosine over steps 10..40:
# 0.1 * 0.5 * (1 + cos(pi * (s - 10) / 30))
@pytest.mark.parametrize("step, want", [
    (0, 0.01), (4, 0.05), (9, 0.1),  # warmup: (s + 1) / 10 of the peak
    (10, 0.1), (20, 0.075), (25, 0.05), (30, 0.025), (40, 0.0),  # cosine: 1, 3/4, 1/2, 1/4, 0 of the peak
    (45, 0.0),  # past the planned steps the rate stays at the end of the schedule
])
def test_warmup_then_cosine(step, want):
    cfg = TrainConfig(lr=0.1, epochs=4, warmup_epochs=1.0, schedule="cosine")
    assert lrs(cfg, 10, [step]) == [pytest.approx(want, abs=1e-12)]


def test_constant_after_warmup_and_fractional_warmup_epochs():
    cfg = TrainConfig(lr=0.2, epochs=3, warmup_epochs=0.5, schedule="constant")  # warmup: 5 of 10 steps
    assert lrs(cfg, 10, [0, 2, 4, 5, 17, 29]) == pytest.approx([0.04, 0.12, 0.2, 0.2, 0.2, 0.2])


def test_no_warmup_starts_at_the_peak():
    cfg = TrainConfig(lr=0.1, epochs=2, warmup_epochs=0.0, schedule="cosine")  # warmup is at least one step
    got = lrs(cfg, 5, [0, 1, 5, 10])  # cosine over steps 1..10: t = (s - 1) / 9
    assert got == pytest.approx([0.1, 0.1, 0.05 * (1 + math.cos(math.pi * 4 / 9)), 0.0])


def test_warmup_longer_than_training_still_reaches_the_peak():
    cfg = TrainConfig(lr=0.1, epochs=1, warmup_epochs=2.0, schedule="cosine")  # 20 warmup steps, 10 planned
    assert lrs(cfg, 10, [0, 19, 20]) == pytest.approx([0.005, 0.1, 0.1])


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_the_named_optimiser_gets_the_settings_of_the_config_and_only_trainable_parameters(name, cls):
    m = model()
    opt = make_optimizer(TrainConfig(optimizer=name, lr=0.03, weight_decay=0.01, momentum=0.8), m)
    (group,) = opt.param_groups
    assert type(opt) is cls and (group["lr"], group["weight_decay"]) == (0.03, 0.01)
    assert [p.data_ptr() for p in group["params"]] == [p.data_ptr() for p in m[1].parameters()]
    if name == "adamw":
        assert group["betas"] == (0.8, 0.999)
    else:
        assert group["momentum"] == 0.8 and group["nesterov"] is True
    assert not group.get("fused")  # fused kernels only when every parameter is on CUDA


def test_an_unknown_optimizer_or_schedule_names_the_key():
    cfg = TrainConfig()
    cfg.optimizer = "lbfgs"  # set past validation, as a stale checkpoint's config could be
    with pytest.raises(ConfigError, match="^optimizer: unknown optimizer 'lbfgs'; known: adamw, sgd"):
        make_optimizer(cfg, model())
    cfg = TrainConfig()
    cfg.schedule = "step"
    with pytest.raises(ConfigError, match="^schedule: unknown schedule 'step'; known: constant, cosine"):
        make_schedule(cfg, make_optimizer(cfg, model()), 10)
