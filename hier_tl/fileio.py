"""The one way hier-tl writes a local file: to a temporary name beside it, then an atomic rename.

Readers never see a half-written file, even if the writer is killed or the disk fills up mid-write;
a failed write removes its temporary file and raises `StorageError` naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from .errors import StorageError


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: write(tmp)`: `p` appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {_why(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (or a read-only file system)"
    return e.strerror or str(e)
