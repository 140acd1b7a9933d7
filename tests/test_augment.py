"""Batched augmentation and mixup arithmetic."""

import torch
import torch.nn.functional as F

from hier_tl.train import augment


def test_mixed_ce_equals_ce_against_the_mixed_soft_target():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    perm, lam = torch.randperm(8), 0.3
    soft = lam * F.one_hot(y, 5).float() + (1 - lam) * F.one_hot(y[perm], 5).float()
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(augment.mixed_ce(logits, y, perm, lam), expected, atol=1e-6)


def test_mixup_mixes_images_with_the_same_permutation():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 4, 4)
    mixed, perm, lam = augment.mixup(x, 0.4)
    assert 0 <= lam <= 1 and torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    same, perm0, lam0 = augment.mixup(x, 0.0)
    assert lam0 == 1.0 and torch.equal(same, x)


def test_augment_keeps_range_and_shape_and_flips_some():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    only_flip = augment.augment(x, hflip=True, rotate_deg=0, jitter=0)
    base = x.float() / 255
    flipped = (only_flip == base.flip(3)).flatten(1).all(1)
    same = (only_flip == base).flatten(1).all(1)
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54
    full = augment.augment(x)
    assert full.shape == x.shape and full.min() >= 0 and full.max() <= 1


def test_to_input_resizes_and_normalises():
    x = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    y = augment.to_input(x, 16, ((0.5,) * 3, (0.5,) * 3))
    assert y.shape == (2, 3, 16, 16) and torch.allclose(y, torch.ones_like(y))


def test_translate_shifts_each_image_by_at_most_the_given_fraction():
    torch.manual_seed(0)
    x = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 14:18, 14:18] = 255  # a bright square centred at (15.5, 15.5)
    out = augment.augment(x, hflip=False, rotate_deg=0, jitter=0, translate=0.125)
    mass = out[:, 0]
    coords = torch.arange(32, dtype=torch.float32)
    cy = (mass.sum(2) * coords).sum(1) / mass.sum((1, 2))
    cx = (mass.sum(1) * coords).sum(1) / mass.sum((1, 2))
    shift = torch.stack([cx - 15.5, cy - 15.5], 1)
    assert shift.abs().max() <= 0.125 * 32 + 0.5  # at most 4 px (+ interpolation)
    assert shift.abs().max() > 2 and shift.std(0).min() > 1  # images move, and by different amounts
    assert torch.equal(augment.augment(x, hflip=False, rotate_deg=0, jitter=0), x.float() / 255)
