"""Images decoded once: a uint8 tensor (N x 3 x H x W) cached on disk under a key built from the image
paths, sizes and modification times, so a second load skips decoding entirely; unlabelled folders.

The cache is a dataset store (`store.py`): images are decoded straight into a preallocated file mapping of
exactly the dataset's size, whatever fails to decode, and every load maps that file read-only, so neither
decoding nor training needs the dataset's size in memory, and every process of a machine shares one copy.
Decoding without the cache (or where it cannot be written) fills one preallocated in-memory array instead,
after checking, from the image count and side alone, that it fits in the memory available: a dataset too
large is refused with the numbers, not killed by the kernel.
"""

from __future__ import annotations

import contextlib
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

from ..core.errors import ConfigError, DataError, HierTLError
from ..core.fileio import cache_dir, first_line, locked
from ..core.progressbar import progress
from .store import META, StoreRef, write_meta, writing
from .store import open_images as open_store

CACHE_VERSION = 1
CHUNK = 1024  # images handed to the decoding threads at a time (bounds the pending work, not the array)
# an image over PIL's pixel limit is a failed image like any other, not a warning printed mid-run
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@dataclass
class ImageSet:
    """Decoded images: uint8 tensor N x 3 x H x W, in the order of `names`."""

    images: torch.Tensor
    names: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # name -> why it could not be decoded
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count, before conversion
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count, before resizing
    notes: list[str] = field(default_factory=list)  # things worth saying (e.g. the cache could not be written)
    store: StoreRef | None = None  # the store `images` is mapped from (None: in memory)


def numeric_key(name: str) -> tuple:
    """Sort key: the numeric part of a file name first ('2.jpg' < '10.jpg'), then the name."""
    m = re.search(r"\d+", Path(name).stem)
    return (int(m.group()) if m else float("inf"), name)



def _decode_one(path: Path, size: int) -> tuple[np.ndarray, str, str]:
    with Image.open(path) as im:
        if im.width * im.height > Image.MAX_IMAGE_PIXELS:  # each decoding thread would hold it whole
            raise ValueError(f"{im.width}x{im.height} pixels, over the {Image.MAX_IMAGE_PIXELS:,} PIL decodes safely")
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
    for p in map(os.path.abspath, paths):  # the same images, whatever the working directory
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:32]


def decode_images(paths: list[Path], size: int, use_cache: bool = True, names: list[str] | None = None) -> ImageSet:
    """Decode `paths` to a uint8 N x 3 x size x size tensor, from the on-disk cache when nothing changed.

    `names` (default: the file names) label the images; those that fail to decode are left out and listed
    in `failed` (name -> reason). A cached failure is tried again, so fixing a file's permissions counts.
    With the cache, images are decoded into it and come back memory-mapped (`ImageSet.store` names it);
    without, or where it cannot be written, the array is refused (ConfigError, with the numbers) before
    decoding anything when it cannot fit in memory.
    """
    names = names or [p.name for p in paths]
    key = _cache_key(paths, size)
    cdir = cache_dir() / key
    cached = _read_cache(cdir, paths, names, size) if use_cache else None
    if cached is not None:
        return cached
    notes, why = [], ""
    if use_cache:
        try:
            with locked(cdir.with_name(f"{cdir.name}.decode.lock")):  # processes decoding together: one decodes
                return _read_cache(cdir, paths, names, size) or _decode_to_store(cdir, paths, names, size)
        except (OSError, HierTLError) as e:
            why = f"the image cache at {cdir} cannot hold them: {first_line(e, 120)}"
            notes.append(f"could not write the image cache at {cdir} ({e}); images will be decoded again next time")
    check_memory(len(paths), size, why=why)
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    kept, decoded = _decode_all(paths, names, size, out)
    return ImageSet(torch.from_numpy(out[:kept]), *decoded, notes)


def _decode_to_store(cdir: Path, paths: list[Path], names: list[str], size: int) -> ImageSet:
    """Decode into a new store at `cdir` (preallocated on disk; shrunk to the images that decode) and map it."""
    with writing(cdir, (len(paths), 3, size, size)) as new:
        kept, (names, failed, modes, sizes) = _decode_all(paths, names, size, new.array)
        new.rows = kept
    write_meta(cdir, {"names": names, "failed": failed, "modes": modes, "sizes": sizes})
    shape = (kept, 3, size, size)
    return ImageSet(open_store(cdir, shape), names, failed, modes, sizes, store=StoreRef(cdir.name, shape))


def _read_cache(cdir: Path, paths: list[Path], names: list[str], size: int) -> ImageSet | None:
    """The cached decoding of these images (mapped, not read), or None: no cache, a failure that may decode
    now, or a cache that is damaged or not what it should hold (then the images are decoded again)."""
    try:
        meta = json.loads((cdir / META).read_text())
        if any(_decodes(p, size) for p, n in zip(paths, names) if n in meta["failed"]):
            return None
        shape = (len(meta["names"]), 3, size, size)
        if len(meta["names"]) + len(meta["failed"]) != len(paths):
            return None
        return ImageSet(open_store(cdir, shape), list(meta["names"]), dict(meta["failed"]), dict(meta["modes"]),
                        dict(meta["sizes"]), store=StoreRef(cdir.name, shape))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, damaged, or another shape
        return None


def _decode_all(paths: list[Path], names: list[str], size: int, out: np.ndarray) -> tuple[int, tuple]:
    """Every image into `out` (N x 3 x size x size, preallocated), those that decode packed to the front in
    order; returns their count and (their names, failures, modes, sizes)."""
    ok = np.zeros(len(paths), dtype=bool)

    def work(i):
        try:
            arr, mode, wh = _decode_one(paths[i], size)
            out[i] = arr.transpose(2, 0, 1)
            ok[i] = True
            return mode, wh, None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a data problem, reported per file
            return None, None, f"{type(e).__name__}: {e}"

    failed: dict[str, str] = {}
    modes, sizes = Counter(), Counter()
    shown = progress(len(paths), "decoding") if len(paths) > CHUNK else contextlib.nullcontext()
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool, shown as counter:
        for start in range(0, len(paths), CHUNK):
            done = pool.map(work, range(start, min(start + CHUNK, len(paths))))
            for name, (mode, wh, err) in zip(names[start:], done):
                if err:
                    failed[name] = err
                else:
                    modes[mode] += 1
                    sizes[wh] += 1
            if counter is not None:  # more than one chunk: a bar (a terminal) or a line every 15 s (a log)
                counter.update(min(CHUNK, len(paths) - start))
    keep = np.flatnonzero(ok)
    for j, i in enumerate(keep):  # pack in place: row j <- row i (i >= j), one image at a time
        if i != j:
            out[j] = out[i]
    return len(keep), ([names[i] for i in keep], failed, dict(modes), dict(sizes))


def dataset_bytes(n: int, size: int) -> int:
    """Bytes of `n` images decoded at `size` x `size` (uint8, 3 channels)."""
    return n * 3 * size * size


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, capped by a cgroup's memory limit
    (a container); None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            found.append(int(Path(limit).read_text()) - int(Path(used).read_text()))
        except (OSError, ValueError):  # no such cgroup, or "max" (no limit)
            continue
    return max(min(found), 0) if found else None


def check_memory(n: int, size: int, available: int | None = None, why: str = "") -> None:
    """Refuse, before decoding, a dataset whose decoded array cannot fit in the memory available (`why` it has
    to: the cache cannot hold it)."""
    need = dataset_bytes(n, size)
    have = available_memory() if available is None else available
    if have is not None and need > have:
        raise ConfigError(f"{n:,} images decoded at {size}x{size} need {_gib(need)} of memory and {_gib(have)} is "
                          f"available{' (' + why + ')' if why else ''}: use a smaller image side (or fewer images), "
                          "or free memory" + (" or disk space for the cache (HIER_TL_CACHE)" if why else ""))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def list_images(folder: Path | str) -> list[Path]:
    """Image files in a folder, sorted by the numeric part of their names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError([f"{folder}: image folder {'is a file' if folder.exists() else 'does not exist'}"])
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".") and (folder / n).is_file()]
    except OSError as e:
        raise DataError([f"{folder}: cannot be read ({e.strerror or e})"]) from None
    return [folder / n for n in sorted(names, key=numeric_key)]


def load_images(folder: Path | str, image_size: int = 64, use_cache: bool = True) -> ImageSet:
    """Decode an unlabelled image folder (e.g. test_images/); undecodable files are listed in `failed`."""
    return decode_images(list_images(folder), image_size, use_cache)
