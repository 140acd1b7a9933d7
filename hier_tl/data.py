"""Dataset layout, validation and the decode-once image cache.

Layout (what researchers have)::

    DIR/train_images/*.jpg
    DIR/train_data.csv            image,superclass_index,subclass_index[,extra columns]
    DIR/superclass_mapping.csv    index,class   (one row named 'novel')
    DIR/subclass_mapping.csv      index,class   (one row named 'novel')
    DIR/test_images/*.jpg         optional, unlabelled

`load_dataset` validates everything (all problems at once, as `DataError`), then decodes every image once
into a uint8 tensor (N x 3 x H x W) cached on disk under a key built from the image names, sizes and
modification times, so a second load skips decoding entirely.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .taxonomy import Taxonomy, read_level

TRAIN_DIR, TEST_DIR = "train_images", "test_images"
TRAIN_CSV, SUPER_CSV, SUB_CSV = "train_data.csv", "superclass_mapping.csv", "subclass_mapping.csv"
REQUIRED_COLUMNS = ("image", "superclass_index", "subclass_index")
INT = re.compile(r"-?[0-9]+")
CACHE_VERSION = 1
MAX_SHOWN = 50


class DataError(Exception):
    """Bad input data; `problems` holds one line per problem, each naming the file and CSV line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more problems" if more > 0 else "")
        super().__init__(f"{len(problems)} problem(s) in the data:\n{text}")


@dataclass
class ImageSet:
    """Decoded images: uint8 tensor N x 3 x H x W, in the order of `names`."""

    images: torch.Tensor
    names: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # name -> why it could not be decoded
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count, before conversion
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count, before resizing


@dataclass
class Dataset:
    """A validated labelled training set, decoded once."""

    root: Path
    taxonomy: Taxonomy
    images: torch.Tensor  # uint8 N x 3 x H x W
    names: list[str]
    superclass: torch.Tensor  # int64 N, dataset (mapping-file) indices
    subclass: torch.Tensor
    modes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def numeric_key(name: str) -> tuple:
    """Sort key: the numeric part of a file name first ('2.jpg' < '10.jpg'), then the name."""
    m = re.search(r"\d+", Path(name).stem)
    return (int(m.group()) if m else float("inf"), name)


def cache_dir() -> Path:
    return Path(os.environ.get("HIER_TL_CACHE", Path.home() / ".cache" / "hier_tl"))


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


def _decode_one(path: Path, size: int) -> tuple[np.ndarray, str, str]:
    with Image.open(path) as im:
        im.load()
        mode, wh = im.mode, f"{im.width}x{im.height}"
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # high bit depth: rescale, do not clip at 255
            a = np.asarray(im, dtype=np.float64)
            top = 1.0 if mode == "F" and a.max() <= 1.0 else (65535.0 if a.max() > 255 else 255.0)
            im = Image.fromarray((a.clip(0, top) / top * 255).round().astype(np.uint8), "L")
        if im.mode != "RGB":
            im = im.convert("RGBA").convert("RGB") if "transparency" in im.info else im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"unexpected decoded shape {arr.shape}")
    return arr, mode, wh


def _decodes(path: Path, size: int) -> bool:
    try:
        _decode_one(path, size)
        return True
    except Exception:  # noqa: BLE001
        return False


def _cache_key(paths: list[Path], size: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:32]


def decode_images(paths: list[Path], size: int, use_cache: bool = True, names: list[str] | None = None) -> ImageSet:
    """Decode `paths` to a uint8 N x 3 x size x size tensor, from the on-disk cache when nothing changed.

    `names` (default: the file names) label the images; those that fail to decode are left out and listed
    in `failed` (name -> reason). A cached failure is tried again, so fixing a file's permissions counts.
    """
    names = names or [p.name for p in paths]
    key = _cache_key(paths, size)
    cdir = cache_dir() / key
    if use_cache and (cdir / "meta.json").is_file():
        try:
            meta = json.loads((cdir / "meta.json").read_text())
            retry = [p for p, n in zip(paths, names) if n in meta["failed"]]
            if not any(_decodes(p, size) for p in retry):
                arr = np.load(cdir / "images.npy")
                return ImageSet(torch.from_numpy(arr), meta["names"], meta["failed"], meta["modes"], meta["sizes"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: decode again
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failed: dict[str, str] = {}
    modes, sizes = Counter(), Counter()

    def work(i):
        try:
            out[i], mode, wh = _decode_one(paths[i], size)
            ok[i] = True
            return mode, wh, None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a data problem, reported per file
            return None, None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for name, (mode, wh, err) in zip(names, pool.map(work, range(len(paths)))):
            if err:
                failed[name] = err
            else:
                modes[mode] += 1
                sizes[wh] += 1
    arr = np.ascontiguousarray(out[ok].transpose(0, 3, 1, 2))
    result = ImageSet(torch.from_numpy(arr), [n for n, good in zip(names, ok) if good], failed, dict(modes), dict(sizes))
    if use_cache:
        _write_cache(cdir, arr, result)
    return result


def _write_cache(cdir: Path, arr: np.ndarray, s: ImageSet) -> None:
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = cdir / f"images.{os.getpid()}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, cdir / "images.npy")
        meta = {"names": s.names, "failed": s.failed, "modes": s.modes, "sizes": s.sizes}
        (cdir / f"meta.{os.getpid()}.tmp").write_text(json.dumps(meta))
        os.replace(cdir / f"meta.{os.getpid()}.tmp", cdir / "meta.json")
    except OSError as e:
        warnings.warn(f"could not write the image cache at {cdir}: {e}", stacklevel=2)


@dataclass
class _Row:
    line: int
    image: str
    sup: int
    sub: int


def _read_train_csv(path: Path, problems: list[str]) -> list[_Row]:
    if not path.is_file():
        problems.append(f"{path}: training CSV is {'a directory' if path.is_dir() else 'missing'}")
        return []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                problems.append(f"{path}: empty file (expected header {','.join(REQUIRED_COLUMNS)})")
                return []
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                problems.append(f"{path} line 1: column(s) {', '.join(dup)} appear more than once")
                return []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                problems.append(f"{path} line 1: missing required column(s) {', '.join(missing)}")
                return []
            reader.fieldnames = header
            rows = []
            for rec in reader:
                if all(not (v or "").strip() for k, v in rec.items() if k is not None) and None not in rec:
                    continue  # blank line
                rows.append(_parse_row(path, reader.line_num, rec, problems))
    except (UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{path}: cannot be parsed as a UTF-8 CSV ({str(e)[:200]})")
        return []
    except OSError as e:
        problems.append(f"{path}: cannot be read ({e.strerror or e})")
        return []
    rows = [r for r in rows if r is not None]
    if not rows and not problems:
        problems.append(f"{path}: no data rows")
    return rows


def _parse_row(path: Path, line: int, rec: dict, problems: list[str]) -> _Row | None:
    image = rec.get("image")
    values = {}
    for col in ("superclass_index", "subclass_index"):
        raw = (rec.get(col) or "").strip()
        if INT.fullmatch(raw) and abs(int(raw)) < 2**31:
            values[col] = int(raw)
        else:
            problems.append(f"{path} line {line} (image {str(image)[:80]!r}): {col} {raw[:40]!r} is not an integer "
                            "(below 2^31)")
    if None in rec:  # more fields than header columns
        problems.append(f"{path} line {line}: more fields than header columns")
    if image is None or len(values) < 2:
        if image is None:
            problems.append(f"{path} line {line}: too few fields")
        return None
    return _Row(line, image, values["superclass_index"], values["subclass_index"])


def _check_rows(path: Path, rows: list[_Row], sup_level, sub_level, problems: list[str]) -> list[_Row]:
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
                warnings.warn(f"{where}: duplicate of line {first.line}; ignored", stacklevel=3)
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


def read_layout(root: Path | str) -> tuple[Taxonomy | None, list[_Row], list[str]]:
    """Parse mapping files and the training CSV without touching images. Returns (taxonomy, rows, problems)."""
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        return None, [], [f"{root}: dataset folder does not exist"]
    if not (root / TRAIN_DIR).is_dir():
        problems.append(f"{root / TRAIN_DIR}: image folder is missing")
    elif not os.access(root / TRAIN_DIR, os.R_OK | os.X_OK):
        problems.append(f"{root / TRAIN_DIR}: image folder cannot be read (permissions)")
    sup = read_level(root / SUPER_CSV, problems)
    sub = read_level(root / SUB_CSV, problems)
    rows = _read_train_csv(root / TRAIN_CSV, problems)
    if sup is None or sub is None:
        return None, rows, problems
    rows = _check_rows(root / TRAIN_CSV, rows, sup, sub, problems)
    parent = {}
    for r in rows:
        parent.setdefault(r.sub, r.sup)
    return Taxonomy(sup, sub, parent), rows, problems


def load_dataset(root: Path | str, image_size: int = 64, use_cache: bool = True) -> Dataset:
    """Validate and decode the labelled training set; raises `DataError` listing every problem found."""
    root = Path(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        taxonomy, rows, problems = read_layout(root)
    notes = [str(w.message) for w in caught]
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
    notes += _conversion_notes(imgs, image_size)
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
                   torch.tensor([r.sub for r in kept], dtype=torch.int64), imgs.modes, imgs.sizes, notes)


def _file_problem(full: Path, name: str) -> str | None:
    try:
        if full.is_file():
            return None
        if full.is_dir():
            return f"image {name!r} is a directory, not a file"
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


def list_images(folder: Path | str) -> list[Path]:
    """Image files in a folder, sorted by the numeric part of their names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError([f"{folder}: image folder does not exist"])
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".") and (folder / n).is_file()]
    except OSError as e:
        raise DataError([f"{folder}: cannot be read ({e.strerror or e})"]) from None
    return [folder / n for n in sorted(names, key=numeric_key)]


def load_images(folder: Path | str, image_size: int = 64, use_cache: bool = True) -> ImageSet:
    """Decode an unlabelled image folder (e.g. test_images/); undecodable files are listed in `failed`."""
    imgs = decode_images(list_images(folder), image_size, use_cache)
    for name, why in imgs.failed.items():
        warnings.warn(f"{Path(folder) / name}: cannot be decoded, skipped ({why})", stacklevel=2)
    return imgs
