"""The dataset store: decoded images as one uint8 N x 3 x H x W array in a `.npy` file (the decode cache's
`images.npy`, beside its `meta.json`), which every process of a machine maps read-only.

Mapped, the images cost a process no memory of its own: the kernel's page cache holds one copy, shared by
every trial on the machine, and a dataset larger than memory is paged in from disk as batches are gathered
(a read-only shared file mapping is not counted as a process's data either). A store is written through a
writable mapping of a file preallocated on disk, so writing one needs no memory either, and a full disk
fails before the first image rather than as a crash midway. Stores, and whatever else a machine caches
(reference features), may also be shared between machines through a `Share` (a sweep's results storage):
`obtain` fetches one once per machine, under a file lock, where it is missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from ..core.fileio import atomic_path, cache_dir, locked, write_text

IMAGES, META = "images.npy", "meta.json"  # META is written last: a store without it is not complete


@dataclass(frozen=True)
class StoreRef:
    """A store by its key (the decode cache's key) and shape: what a trial is sent instead of the images,
    resolved on the machine that opens it (`folder`, under that machine's cache folder)."""

    key: str
    shape: tuple[int, int, int, int]

    @property
    def folder(self) -> Path:
        return cache_dir() / self.key

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


class Share(Protocol):
    """Where caches are shared between machines (`sweep.trainable.StorageShare`: the sweep's results storage).
    `rel` names a file as `<store key>/images.npy` or `reference/<key>.npy`."""

    def fetch(self, rel: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> bool:
        """Copy `rel` to the local file `dest` (atomically); False when it is not shared."""

    def publish(self, rel: str, src: Path) -> None:
        """Share the local file `src` as `rel` (nothing when it is shared already)."""


def open_images(folder: Path, shape: tuple | None = None) -> torch.Tensor:
    """The store's images as a read-only memory-mapped uint8 tensor (never write into it). Raises OSError or
    ValueError when the file is missing, damaged, not uint8 N x 3 x H x W or not of `shape`."""
    arr = np.load(Path(folder) / IMAGES, mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3 or (shape is not None and arr.shape != tuple(shape)):
        raise ValueError(f"{folder / IMAGES}: {arr.dtype} {arr.shape}, not uint8 {shape or 'N x 3 x H x W'}")
    with warnings.catch_warnings():  # torch warns that it has no read-only tensors: this one is only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def complete(folder: Path, shape: tuple | None = None) -> bool:
    """Whether `folder` holds a whole store (of `shape`, when given)."""
    try:
        open_images(folder, shape)
        return (Path(folder) / META).is_file()
    except (OSError, ValueError):
        return False


class NewStore:
    """A store being written: its `array` (a writable mapping) and the `rows` to keep when the block ends
    (all of them unless the writer lowers it: images that did not decode)."""

    def __init__(self, array: np.ndarray):
        self.array, self.rows = array, len(array)


@contextlib.contextmanager
def writing(folder: Path, shape: tuple) -> Iterator[NewStore]:
    """`with writing(folder, shape) as new: new.array[i] = ...; new.rows = kept`: a file preallocated on disk
    (OSError, e.g. ENOSPC, before anything is written), cut to its first `new.rows` images, then renamed into
    place as `folder/images.npy` when the block ends: complete or not at all, never changed once in place.
    `meta.json` is the caller's to write."""
    with atomic_path(Path(folder) / IMAGES) as tmp:
        with open(tmp, "wb") as f:  # the header, then the whole array's blocks reserved
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
            size = f.tell() + int(np.prod(shape))
            if hasattr(os, "posix_fallocate"):  # blocks reserved: a full disk fails here, not midway
                os.posix_fallocate(f.fileno(), 0, size)
            else:  # macOS: a sparse file of the right size
                f.truncate(size)
        new = NewStore(np.lib.format.open_memmap(tmp, mode="r+"))
        try:
            yield new
            new.array.flush()
        finally:
            new.array = None  # unmapped before the file is cut
        if new.rows < shape[0]:
            _shrink(tmp, new.rows)


def _shrink(path: Path, rows: int) -> None:
    """Keep the first `rows` images of the array in `path` (a rewritten header and a truncated file, no copy)."""
    with open(path, "r+b") as f:
        shape, _, _ = np.lib.format.read_array_header_1_0(f) if np.lib.format.read_magic(f) == (1, 0) else \
            np.lib.format.read_array_header_2_0(f)
        start = f.tell()
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                   "shape": (rows, *shape[1:])})
        if head.tell() != start:  # numpy pads headers for growth: a shorter shape fits the same bytes
            raise ValueError(f"{path}: header of {start} bytes cannot be rewritten in place")
        f.seek(0)
        f.write(head.getvalue())
        f.truncate(start + rows * int(np.prod(shape[1:])))


def write_meta(folder: Path, meta: dict) -> None:
    """The store's `meta.json` (names, failures, modes, sizes): written last, it marks the store complete."""
    write_text(Path(folder) / META, json.dumps(meta))


def obtain(ref: StoreRef, fetch: Callable[[Path], bool] | None) -> bool:
    """Whether this machine holds the store `ref` names, after `fetch(folder)` (a download) where it did not:
    once per machine, as processes asking together wait for the first (a file lock beside the folder)."""
    folder = ref.folder
    if complete(folder, ref.shape):
        return True
    if fetch is None:
        return False
    with locked(folder.with_name(f"{folder.name}.lock")):
        return complete(folder, ref.shape) or (fetch(folder) and complete(folder, ref.shape))
