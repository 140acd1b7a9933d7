"""Dataset layout, validation and assembly.

Layout (what researchers have)::

    DIR/train_images/*.jpg
    DIR/train_data.csv            image,superclass_index,subclass_index[,extra columns]
    DIR/superclass_mapping.csv    index,class   (one row named 'novel')
    DIR/subclass_mapping.csv      index,class   (one row named 'novel')
    DIR/test_images/*.jpg         optional, unlabelled

`load_dataset` validates everything (all problems at once, as `DataError`), then decodes every image once
(`images.decode_images`, cached on disk as a store that every later load maps read-only). `Dataset.ref()`
is the same dataset without its image bytes (a few kilobytes: labels, names, the store's key), which
`DatasetRef.open()` maps again on the machine where it is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..core.errors import DataError
from .images import ImageSet, decode_images, list_images, load_images
from .store import Share, StoreRef, open_images
from .taxonomy import Taxonomy, parse_int, read_csv, read_level

TRAIN_DIR, TEST_DIR = "train_images", "test_images"
TRAIN_CSV, SUPER_CSV, SUB_CSV = "train_data.csv", "superclass_mapping.csv", "subclass_mapping.csv"
REQUIRED_COLUMNS = ("image", "superclass_index", "subclass_index")


@dataclass
class Dataset:
    """A validated labelled training set, decoded once."""

    root: Path
    taxonomy: Taxonomy
    images: torch.Tensor  # uint8 N x 3 x H x W; read-only when mapped from `store`: never write into it
    names: list[str]
    superclass: torch.Tensor  # int64 N, dataset (mapping-file) indices
    subclass: torch.Tensor
    modes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    store: StoreRef | None = None  # the store `images` is mapped from; None: in memory only
    share: Share | None = None  # where its caches (the store, reference features) are shared between machines

    def __len__(self) -> int:
        return len(self.names)

    def ref(self) -> DatasetRef:
        """This dataset without its image bytes, to send to other processes (ValueError when not mapped)."""
        if self.store is None:
            raise ValueError("only a dataset mapped from a store can be sent by reference")
        return DatasetRef(**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "images"})


@dataclass
class DatasetRef:
    """A mapped `Dataset` without its images: what a sweep sends each trial (no copy of the images in Ray's
    object store, nor in each trial's process)."""

    root: Path
    taxonomy: Taxonomy
    names: list[str]
    superclass: torch.Tensor
    subclass: torch.Tensor
    modes: dict[str, int]
    sizes: dict[str, int]
    warnings: list[str]
    store: StoreRef
    share: Share | None = None

    def __len__(self) -> int:
        return len(self.names)

    def open(self) -> Dataset:
        """The dataset with its images mapped from this machine's store (`store.obtain` makes sure it is
        there); OSError or ValueError when it is missing or not what was sent."""
        images = open_images(self.store.folder, self.store.shape)
        return Dataset(images=images, **{f.name: getattr(self, f.name) for f in fields(self)})


def safe_image_path(images_dir: Path, name: str) -> tuple[Path | None, str | None]:
    """Resolve `name` inside `images_dir`; refuse names that escape it (.., absolute, symlinks out)."""
    if not name or name.strip() != name or "\x00" in name:
        return None, f"image name {name[:80]!r} is empty, has surrounding spaces or a NUL byte"
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        return None, f"image name {name!r} escapes {images_dir.name}/ (absolute or '..' path)"
    full = images_dir / p
    try:
        resolved = full.resolve(strict=False)
    except (OSError, RuntimeError) as e:
        return None, f"image {name!r} cannot be resolved ({e})"
    if not resolved.is_relative_to(images_dir.resolve()):
        return None, f"image {name!r} points outside {images_dir.name}/ (symlink to {resolved})"
    return full, None


@dataclass
class _Row:
    line: int
    image: str
    sup: int
    sub: int


def _read_train_csv(path: Path, problems: list[str]) -> list[_Row]:
    records = read_csv(path, REQUIRED_COLUMNS, "training CSV", problems)
    if records is None:
        return []
    rows = [r for line, rec in records if (r := _parse_row(path, line, rec, problems)) is not None]
    if not records and not problems:
        problems.append(f"{path}: no data rows")
    return rows


def _parse_row(path: Path, line: int, rec: dict, problems: list[str]) -> _Row | None:
    values = {}
    for col in ("superclass_index", "subclass_index"):
        values[col] = parse_int(rec[col])
        if values[col] is None:
            problems.append(f"{path} line {line} (image {rec['image'][:80]!r}): {col} {rec[col].strip()[:40]!r} "
                            "is not an integer (below 2^31)")
    if None in values.values():
        return None
    return _Row(line, rec["image"], values["superclass_index"], values["subclass_index"])


def _check_rows(path: Path, rows: list[_Row], sup_level, sub_level, problems: list[str],
                notes: list[str]) -> list[_Row]:
    """Index range, novel labels, duplicates and taxonomy conflicts; returns the usable rows."""
    good, seen, parent = [], {}, {}
    for r in rows:
        where = f"{path} line {r.line} (image {r.image!r})"
        bad = False
        for level, value, col in ((sup_level, r.sup, "superclass_index"), (sub_level, r.sub, "subclass_index")):
            if value < 0:
                problems.append(f"{where}: {col} {value} is negative")
                bad = True
            elif value == level.novel:
                problems.append(f"{where}: {col} {value} is the novel index; training rows must be known classes")
                bad = True
            elif value not in level.names:
                problems.append(f"{where}: {col} {value} is not in the mapping file")
                bad = True
        if bad:
            continue
        key = os.path.normpath(r.image)
        if key in seen:
            first = seen[key]
            if (first.sup, first.sub) != (r.sup, r.sub):
                problems.append(f"{where}: listed again with different labels (first at line {first.line}: "
                                f"{first.sup},{first.sub}; here {r.sup},{r.sub})")
            else:
                notes.append(f"{where}: duplicate of line {first.line}; ignored")
            continue
        seen[key] = r
        if r.sub in parent and parent[r.sub][0] != r.sup:
            p_sup, p_line = parent[r.sub]
            problems.append(f"{where}: subclass {r.sub} listed under superclass {r.sup}, but under {p_sup} "
                            f"at line {p_line}")
            continue
        parent.setdefault(r.sub, (r.sup, r.line))
        good.append(r)
    return good


def read_layout(root: Path | str) -> tuple[Taxonomy | None, list[_Row], list[str], list[str]]:
    """Parse mapping files and the training CSV without touching images.
    Returns (taxonomy, rows, problems, notes): problems stop a load, notes are said and ignored."""
    root = Path(root)
    problems: list[str] = []
    notes: list[str] = []
    if not root.is_dir():
        return None, [], [f"{root}: dataset folder {'is a file' if root.exists() else 'does not exist'}"], notes
    if not (root / TRAIN_DIR).is_dir():
        problems.append(f"{root / TRAIN_DIR}: image folder is {'a file' if (root / TRAIN_DIR).exists() else 'missing'}")
    elif not os.access(root / TRAIN_DIR, os.R_OK | os.X_OK):
        problems.append(f"{root / TRAIN_DIR}: image folder cannot be read (permissions)")
    sup = read_level(root / SUPER_CSV, problems)
    sub = read_level(root / SUB_CSV, problems)
    rows = _read_train_csv(root / TRAIN_CSV, problems)
    if sup is None or sub is None:
        return None, rows, problems, notes
    rows = _check_rows(root / TRAIN_CSV, rows, sup, sub, problems, notes)
    parent = {}
    for r in rows:
        parent.setdefault(r.sub, r.sup)
    return Taxonomy(sup, sub, parent), rows, problems, notes


def load_dataset(root: Path | str, image_size: int = 64, use_cache: bool = True) -> Dataset:
    """Validate and decode the labelled training set; raises `DataError` listing every problem found."""
    root = Path(root).absolute()  # trials, in other working directories, may open it again
    taxonomy, rows, problems, notes = read_layout(root)
    images_dir = root / TRAIN_DIR
    paths, kept = [], []
    for r in rows:
        full, why = safe_image_path(images_dir, r.image)
        if why is None:
            why = _file_problem(full, r.image)
        if why:
            problems.append(f"{root / TRAIN_CSV} line {r.line}: {why}")
        else:
            paths.append(full)
            kept.append(r)
    if problems:  # structural problems first: no point decoding
        raise DataError(problems)
    imgs = decode_images(paths, image_size, use_cache, names=[r.image for r in kept])
    for r in kept:
        if r.image in imgs.failed:
            problems.append(f"{root / TRAIN_CSV} line {r.line}: image {r.image!r} cannot be decoded "
                            f"({imgs.failed[r.image]})")
    if problems:
        raise DataError(problems)
    assert len(imgs.names) == len(kept), "decoded images and labels are out of step"
    notes += imgs.notes + _conversion_notes(imgs, image_size)
    listed = {os.path.normpath(r.image) for r in kept}
    try:
        extra = [n for n in os.listdir(images_dir) if n not in listed and not n.startswith(".")
                 and (images_dir / n).is_file()]
    except OSError:
        extra = []
    unused = sorted(set(taxonomy.superclass.names) - {r.sup for r in kept})
    if unused:
        notes.append(f"superclass(es) {unused} of {SUPER_CSV} have no training images")
    if extra:
        notes.append(f"{len(extra)} file(s) in {TRAIN_DIR}/ are not listed in {TRAIN_CSV} (ignored), "
                     f"e.g. {sorted(extra)[:3]}")
    return Dataset(root, taxonomy, imgs.images, imgs.names,
                   torch.tensor([r.sup for r in kept], dtype=torch.int64),
                   torch.tensor([r.sub for r in kept], dtype=torch.int64), imgs.modes, imgs.sizes, notes, imgs.store)


def _file_problem(full: Path, name: str) -> str | None:
    try:
        if full.is_file():
            return None
        if full.is_dir():
            return f"image {name!r} is a directory, not a file"
        if full.exists():  # a FIFO, socket or device: reading it could block or never end
            return f"image {name!r} is not a regular file (a pipe, socket or device)"
        return f"image {name!r} does not exist in {TRAIN_DIR}/"
    except OSError as e:
        return f"image {name!r} cannot be accessed ({e.strerror or e})"


def _conversion_notes(imgs: ImageSet, size: int) -> list[str]:
    notes = []
    converted = {m: n for m, n in imgs.modes.items() if m != "RGB"}
    if converted:
        notes.append(f"converted to RGB: {converted} (mode: count)")
    resized = {s: n for s, n in imgs.sizes.items() if s != f"{size}x{size}"}
    if resized:
        notes.append(f"resized to {size}x{size}: {resized} (original size: count)")
    return notes




def summary(root: Path | str, image_size: int = 64) -> list[str]:
    """What `hier-tl data check` prints: counts per level, class balance, image sizes, test images, notes."""
    ds = load_dataset(root, image_size)
    tax, lines = ds.taxonomy, []
    lines.append(f"{root}: {len(ds)} training images, {len(set(ds.superclass.tolist()))} superclasses, "
                 f"{len(set(ds.subclass.tolist()))} subclasses (novel indices: superclass {tax.superclass.novel}, "
                 f"subclass {tax.subclass.novel})")
    for s in sorted(set(ds.superclass.tolist())):
        mask = ds.superclass == s
        lines.append(f"  superclass {s} {tax.superclass.names[s]!r}: {int(mask.sum())} images, "
                     f"{len(set(ds.subclass[mask].tolist()))} subclasses")
    counts = {int(k): int(v) for k, v in zip(*ds.subclass.unique(return_counts=True))}
    lo, hi = min(counts, key=counts.get), max(counts, key=counts.get)
    lines.append(f"  subclass sizes: smallest {counts[lo]} ({tax.subclass.names[lo]!r}), largest {counts[hi]} "
                 f"({tax.subclass.names[hi]!r}), largest/smallest ratio {counts[hi] / counts[lo]:.2f}")
    lines.append(f"  image sizes: {_fmt(ds.sizes)}; modes: {_fmt(ds.modes)}")
    lines.append(_test_summary(Path(root) / TEST_DIR, image_size))
    return lines + [f"  warning: {note}" for note in ds.warnings]


def _test_summary(test_dir: Path, image_size: int) -> str:
    if not test_dir.is_dir():
        return f"  test images: none ({TEST_DIR}/ not found)"
    imgs = load_images(test_dir, image_size)
    n_files = len(list_images(test_dir))
    return (f"  test images: {n_files} found in {TEST_DIR}/, {len(imgs.names)} decodable"
            + (f", {len(imgs.failed)} NOT decodable (predict skips them): {', '.join(list(imgs.failed)[:5])}"
               if imgs.failed else ""))


def _fmt(counter: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))
