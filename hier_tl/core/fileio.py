"""The one way hier-tl writes a local file: to a temporary name beside it, then an atomic rename.

Readers never see a half-written file, even if the writer is killed or the disk fills up mid-write;
a failed write removes its temporary file and raises `StorageError` naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

from .errors import ConfigError, StorageError


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
        raise StorageError(f"cannot write {path}: {describe(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(fs, path: str, data: bytes) -> None:
    """The same promise through a pyarrow filesystem: one PUT on object stores (atomic there), else a
    temporary name beside the target and a move."""
    if _is_object_store(fs):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    folder, _, base = path.rpartition("/")
    tmp = f"{folder}/.{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def _is_object_store(fs) -> bool:
    import pyarrow.fs as pafs

    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return fs.type_name in ("s3", "gcs", "abfs")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one short line (its type when it says nothing)."""
    text = " ".join(str(e).split("\n")[0].split())
    return text[:limit] if text else type(e).__name__


def describe(e: OSError) -> str:
    """An OSError as a few words a user can act on."""
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (or a read-only file system)"
    return e.strerror or str(e)


def cache_dir() -> Path:
    """Where hier-tl keeps what it can compute again (decoded images, reference features): $HIER_TL_CACHE,
    else ~/.cache/hier_tl."""
    return Path(os.environ.get("HIER_TL_CACHE", Path.home() / ".cache" / "hier_tl"))


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, key: str = "--name") -> str:
    """A sweep name is one path segment of letters, digits, '.', '_' and '-' (no '/', no '..')."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{key}: {name!r} is not a valid sweep name: use one folder name of letters, digits, "
                          "'.', '_' and '-' (no '/', starting with a letter or digit)")
    return name


@contextlib.contextmanager
def locked(path: Path, on_wait=None) -> Iterator[None]:
    """An exclusive lock on the file `path`, held by this process until the block ends: processes of one machine
    take turns (the first makes a cache entry, the others find it). `on_wait()` is called once when another
    process holds it. Where no lock can be taken (no fcntl, a read-only folder, a file system without locks),
    the block runs unlocked: callers keep their writes atomic anyway."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except (ImportError, OSError):
        yield
        return
    with f:
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): unlocked
            pass
        yield
