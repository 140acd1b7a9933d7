"""A procedural dataset in the real layout, for the built-in demo and the tests.

The superclass decides the shape family, the subclass its colour and texture; position, scale, rotation,
background, clutter and noise are random, so a small CNN needs a few epochs to pass 90%. The test folder
holds seen classes, novel subclasses of seen superclasses and a whole novel superclass, with their true
labels (novel indices where novel) in `test_labels.csv`. Same seed, same bytes.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..core.config import Range, check_fields
from ..core.errors import ConfigError, StorageError
from ..core.fileio import cache_dir, describe

if TYPE_CHECKING:
    from .dataset import Dataset

GENERATOR_VERSION = 2  # bump when the images change, so cached synthetic sets are regenerated
SHAPES = ["ellipse", "square", "triangle", "star", "cross", "hexagon", "diamond", "ring"]
TEXTURES = ["solid", "stripes", "dots", "checks"]


MAX_IMAGES = 1_000_000  # training + test images: a synthetic set is for demos and tests


@dataclass(frozen=True)
class SynthSpec:
    n_super: Annotated[int, Range(1, len(SHAPES) - 1)] = 3  # known superclasses (one more, novel, in test only)
    subs_per_super: Annotated[int, Range(1, 1000)] = 6  # known subclasses per superclass
    novel_subs_per_super: Annotated[int, Range(0, 1000)] = 2  # extra subclasses per superclass, in test only
    per_class: Annotated[int, Range(1, MAX_IMAGES)] = 40  # training images per known subclass
    test_per_class: Annotated[int, Range(0, MAX_IMAGES)] = 8  # test images per class (seen, novel sub, novel super)
    size: Annotated[int, Range(16, 1024)] = 64  # image side in pixels
    seed: Annotated[int, Range(0, 2**63 - 1)] = 0

    def validate(self) -> None:
        check_fields(self)
        m = self.subs_per_super + self.novel_subs_per_super
        n = self.n_super * self.subs_per_super * self.per_class + (self.n_super + 1) * m * self.test_per_class
        if n > MAX_IMAGES:
            raise ConfigError(f"this synthetic dataset would hold {n:,} images (limit {MAX_IMAGES:,}): lower "
                              "per_class, test_per_class or the class counts")


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n, radii):
        return [(cx + radii[i % len(radii)] * math.cos(rot + 2 * math.pi * i / n),
                 cy + radii[i % len(radii)] * math.sin(rot + 2 * math.pi * i / n)) for i in range(n)]
    return {
        "ellipse": lambda: [(cx + r * math.cos(t) * math.cos(rot) - 0.6 * r * math.sin(t) * math.sin(rot),
                             cy + r * math.cos(t) * math.sin(rot) + 0.6 * r * math.sin(t) * math.cos(rot))
                            for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)],
        "square": lambda: ring(4, [r]),
        "triangle": lambda: ring(3, [r]),
        "star": lambda: ring(10, [r, 0.45 * r]),
        "cross": lambda: ring(12, [r, r, 0.45 * r]),
        "hexagon": lambda: ring(6, [r]),
        "diamond": lambda: ring(4, [r, 0.5 * r]),
        "ring": lambda: ring(8, [r, 0.8 * r]),
    }[shape]()


def _texture(rng: np.random.Generator, hue: float, texture: str, size: int) -> Image.Image:
    sat, val = rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0)
    base = np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val)) * 255
    alt = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, sat * 0.5, val * 0.5)) * 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ang, period = rng.uniform(0, math.pi), rng.uniform(0.1, 0.16) * size
    u = xx * math.cos(ang) + yy * math.sin(ang)
    v = -xx * math.sin(ang) + yy * math.cos(ang)
    mask = {
        "solid": np.zeros_like(u, dtype=bool),
        "stripes": (u // (period / 2)) % 2 == 0,
        "dots": ((u % period - period / 2) ** 2 + (v % period - period / 2) ** 2) < (period / 4) ** 2,
        "checks": ((u // period) + (v // period)) % 2 == 0,
    }[texture]
    img = np.where(mask[..., None], alt, base)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def draw(rng: np.random.Generator, shape: str, hue: float, texture: str, size: int) -> Image.Image:
    """One image: textured shape on a noisy, cluttered background."""
    big = size * 2
    bg = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.25, 0.9))) * 255
    grad = np.linspace(-1, 1, big)[None, :, None] * rng.uniform(-40, 40, size=3)
    canvas = Image.fromarray(np.broadcast_to(bg + grad, (big, big, 3)).clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 3)):  # clutter: small random blobs
        x, y, s = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(0.03, 0.1) * big
        d.ellipse([x - s, y - s, x + s, y + s], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    r = rng.uniform(0.28, 0.45) * big
    cx, cy = rng.uniform(r * 0.8, big - r * 0.8), rng.uniform(r * 0.8, big - r * 0.8)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.4, 0.4) - math.pi / 2), fill=255)
    if shape == "ring":  # punch the hole
        ImageDraw.Draw(mask).ellipse([cx - 0.4 * r, cy - 0.4 * r, cx + 0.4 * r, cy + 0.4 * r], fill=0)
    canvas.paste(_texture(rng, hue + rng.normal(0, 0.015), texture, big), (0, 0), mask)
    img = canvas.resize((size, size), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.4)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(2, 8), (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _classes(spec: SynthSpec, rng: np.random.Generator):
    """(super, local sub) -> (shape, hue, texture); subclass indices shuffled across superclasses."""
    m = spec.subs_per_super + spec.novel_subs_per_super
    # each superclass owns a band of hues; its subclasses differ by hue within the band and by texture
    style = {(s, j): (SHAPES[s], (s + (j + 0.5) / m) / (spec.n_super + 1), TEXTURES[j % len(TEXTURES)])
             for s in range(spec.n_super + 1) for j in range(m)}
    known = [(s, j) for s in range(spec.n_super) for j in range(spec.subs_per_super)]
    order = rng.permutation(len(known))
    sub_index = {known[k]: int(i) for i, k in enumerate(order)}
    return style, sub_index


def synthesize(out: Path | str, spec: SynthSpec = SynthSpec()) -> Path:
    """Write a complete dataset (train + test + labels) to `out`, a new or empty folder, and return it: all of
    it, or nothing if writing fails (a full disk): it is written beside `out`, then renamed."""
    spec.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder; write a synthetic dataset to a new one")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _write_all(tmp, spec)
        os.replace(tmp, out)
    except OSError as e:
        raise StorageError(f"cannot write {out}: {describe(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_all(out: Path, spec: SynthSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    style, sub_index = _classes(spec, rng)
    n_sub = len(sub_index)
    for d in ("train_images", "test_images"):
        (out / d).mkdir(parents=True, exist_ok=True)
    _write_csv(out / "superclass_mapping.csv", ["index", "class"],
               [[s, SHAPES[s]] for s in range(spec.n_super)] + [[spec.n_super, "novel"]])
    names = {i: "-".join([style[k][0], f"hue{style[k][1]:.2f}", style[k][2]]) for k, i in sub_index.items()}
    _write_csv(out / "subclass_mapping.csv", ["index", "class"],
               [[i, names[i]] for i in range(n_sub)] + [[n_sub, "novel"]])
    train = [(s, sub_index[(s, j)], (s, j)) for (s, j) in sub_index for _ in range(spec.per_class)]
    train = [train[i] for i in rng.permutation(len(train))]
    rows = []
    for i, (s, sub, key) in enumerate(train):
        draw(rng, *style[key], spec.size).save(out / "train_images" / f"{i}.jpg", quality=95)
        rows.append([f"{i}.jpg", s, sub, f"synthetic {names[sub]}"])
    _write_csv(out / "train_data.csv", ["image", "superclass_index", "subclass_index", "description"], rows)
    _write_test(out, spec, rng, style, sub_index, n_sub)


def _write_test(out: Path, spec: SynthSpec, rng, style, sub_index, n_sub: int) -> None:
    m = spec.subs_per_super + spec.novel_subs_per_super
    items = [(s, sub_index[(s, j)], (s, j)) for (s, j) in sub_index]  # seen
    items += [(s, n_sub, (s, j)) for s in range(spec.n_super) for j in range(spec.subs_per_super, m)]  # novel sub
    items += [(spec.n_super, n_sub, (spec.n_super, j)) for j in range(m)]  # novel superclass
    items = [it for it in items for _ in range(spec.test_per_class)]
    items = [items[i] for i in rng.permutation(len(items))]
    rows = []
    for i, (s, sub, key) in enumerate(items):
        draw(rng, *style[key], spec.size).save(out / "test_images" / f"{i}.jpg", quality=95)
        rows.append([f"{i}.jpg", s, sub])
    _write_csv(out / "test_labels.csv", ["image", "superclass_index", "subclass_index"], rows)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def load_source(source: str, spec: SynthSpec = SynthSpec()) -> Dataset:
    """A dataset folder, validated and decoded once; `synthetic` is generated once per spec and cached."""
    from .dataset import (
        load_dataset,  # here: `hier-tl --help` reads SynthSpec without importing torch
    )

    if source != "synthetic":
        return load_dataset(source)
    key = hashlib.sha256(f"{GENERATOR_VERSION}|{spec!r}".encode()).hexdigest()[:16]
    root = cache_dir() / "synthetic" / key
    if not (root / ".complete").exists():
        tmp = root.with_name(f"{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        synthesize(tmp, spec)
        (tmp / ".complete").touch()
        if not root.exists():
            os.replace(tmp, root)
        shutil.rmtree(tmp, ignore_errors=True)
    return load_dataset(root)


def spec_fields() -> list[dataclasses.Field]:
    """The generator's parameters (the CLI's `data synth` options and a sweep's `synthetic:` keys)."""
    return list(dataclasses.fields(SynthSpec))
