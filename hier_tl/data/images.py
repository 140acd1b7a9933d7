"""Images decoded once: a uint8 tensor (N x 3 x H x W) cached on disk under a key built from the image
paths, sizes and modification times, so a second load skips decoding entirely; unlabelled folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import DataError, HierTLError
from ..core.fileio import atomic_path, cache_dir, write_text

CACHE_VERSION = 1


@dataclass
class ImageSet:
    """Decoded images: uint8 tensor N x 3 x H x W, in the order of `names`."""

    images: torch.Tensor
    names: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # name -> why it could not be decoded
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count, before conversion
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count, before resizing
    notes: list[str] = field(default_factory=list)  # things worth saying (e.g. the cache could not be written)


def numeric_key(name: str) -> tuple:
    """Sort key: the numeric part of a file name first ('2.jpg' < '10.jpg'), then the name."""
    m = re.search(r"\d+", Path(name).stem)
    return (int(m.group()) if m else float("inf"), name)



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
        result.notes += _write_cache(cdir, arr, result)
    return result


def _write_cache(cdir: Path, arr: np.ndarray, s: ImageSet) -> list[str]:
    """Write the decode cache; a failure (full disk...) only costs decoding again next time."""
    try:
        with atomic_path(cdir / "images.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
        write_text(cdir / "meta.json", json.dumps({"names": s.names, "failed": s.failed, "modes": s.modes,
                                                   "sizes": s.sizes}))
    except (OSError, HierTLError) as e:
        return [f"could not write the image cache at {cdir} ({e}); images will be decoded again next time"]
    return []


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
    return decode_images(list_images(folder), image_size, use_cache)
