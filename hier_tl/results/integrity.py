"""What `--resume` trusts: only state files this machine's hier-tl wrote.

Ray Tune resumes by unpickling `tuner.pkl`, the searcher state and the experiment state from the sweep
folder; a planted file there would run code. Ray reads and writes the folder through a `SigningFS`: every
file it writes at the folder's top level gets a keyed hash (HMAC-SHA256, key in `~/.config/hier_tl/key`,
created on first use, readable by its owner only) in `.hier_tl-sig/<name>`, written *before* the file and
listing the previous hash too, so a driver killed between the two writes still verifies. Before resuming,
`verify` checks every such file and refuses, naming it, anything it did not sign.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import json
import os
import secrets
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from ..core.errors import StorageError, SweepError
from ..core.fileio import describe

SIG_DIR = ".hier_tl-sig"
STATE_SUFFIXES = (".pkl", ".json")  # what Ray unpickles (its JSON embeds cloudpickled objects)


def key_file() -> Path:
    return Path(os.environ.get("HIER_TL_KEY_FILE") or Path.home() / ".config" / "hier_tl" / "key")


KEY_BYTES = 32  # an HMAC key of fewer random bytes (an empty one above all) protects nothing


def load_key() -> bytes:
    """This user's signing key: at least `KEY_BYTES` random bytes, created (mode 0600) the first time.
    Processes that start together all read the one key the first of them created (never an empty file):
    the key is written to a private temporary file, then linked to its name, which never overwrites."""
    path = key_file()
    key = _read_key(path)
    if key is None:
        _create_key(path)
        key = _read_key(path)
    if key is None:  # removed by someone else between its creation and this read
        raise StorageError(f"cannot create the key at {path}: it vanished as it was created; run again")
    if len(key) < KEY_BYTES:
        raise StorageError(f"the signing key at {path} holds {len(key)} bytes; a key must be at least {KEY_BYTES} "
                           "random bytes, or resumed state files could be forged: move it away and hier-tl creates "
                           "a new one (sweeps signed with the old key can then only start afresh)")
    return key


def _read_key(path: Path) -> bytes | None:
    """The key file's bytes; None if it does not exist."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StorageError(f"cannot read the signing key at {path}: {describe(e)} (set HIER_TL_KEY_FILE to "
                           "another file to use another key)") from None


def _create_key(path: Path) -> None:
    """A new key at `path`, unless another process made one first (then that one stays)."""
    tmp = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        _link_new(tmp, path)
    except OSError as e:
        why = f"{path.parent} is a file" if path.parent.is_file() else describe(e)
        raise StorageError(f"cannot create the key at {path}: {why} (set HIER_TL_KEY_FILE to a writable "
                           "place)") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _link_new(tmp: str, path: Path) -> None:
    """Give the complete file `tmp` the name `path` unless that name exists (the first creator wins)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS, errno.EMLINK):
            raise
        if not path.exists():  # no hard links on this file system: a rename (a racing creator may win instead)
            os.rename(tmp, path)


def digest(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class _SigningHandler(pafs.FileSystemHandler):
    """Delegates to `fs`; files written directly under `exp` are signed first (see the module doc)."""

    def __init__(self, fs: pafs.FileSystem, exp: str):
        self.fs, self.exp = fs, exp.rstrip("/")

    def __reduce__(self):  # shipped to trial workers: they write checkpoints, never state files
        return (_SigningHandler, (self.fs, self.exp))

    def open_output_stream(self, path, metadata):
        parent, _, name = path.rstrip("/").rpartition("/")
        if parent != self.exp or not name.endswith(STATE_SUFFIXES) or name.startswith("."):
            return self.fs.open_output_stream(path, metadata=metadata)
        return pa.PythonFile(_SignedWrite(self.fs, self.exp, name, path), mode="w")

    # plain delegation
    def get_type_name(self): return "hier-tl-signing+" + self.fs.type_name  # noqa: E704
    def normalize_path(self, path): return self.fs.normalize_path(path)  # noqa: E704
    def get_file_info(self, paths): return self.fs.get_file_info(paths)  # noqa: E704
    def get_file_info_selector(self, selector): return self.fs.get_file_info(selector)  # noqa: E704
    def create_dir(self, path, recursive): self.fs.create_dir(path, recursive=recursive)  # noqa: E704
    def delete_dir(self, path): self.fs.delete_dir(path)  # noqa: E704
    def delete_dir_contents(self, path, missing_dir_ok=False): self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)  # noqa: E501,E704
    def delete_root_dir_contents(self): self.fs.delete_dir_contents("/", accept_root_dir=True)  # noqa: E704
    def delete_file(self, path): self.fs.delete_file(path)  # noqa: E704
    def move(self, src, dest): self.fs.move(src, dest)  # noqa: E704
    def copy_file(self, src, dest): self.fs.copy_file(src, dest)  # noqa: E704
    def open_input_stream(self, path): return self.fs.open_input_stream(path)  # noqa: E704
    def open_input_file(self, path): return self.fs.open_input_file(path)  # noqa: E704
    def open_append_stream(self, path, metadata): return self.fs.open_append_stream(path, metadata=metadata)  # noqa: E704,E501


class _SignedWrite(io.RawIOBase):
    """Buffers a state file; on close writes its signature (new hash + previous one), then the file."""

    def __init__(self, fs, exp: str, name: str, path: str):
        self.fs, self.exp, self.name, self.path, self.buf = fs, exp, name, path, io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self.buf.write(b)

    def close(self) -> None:
        if not self.closed:
            data, key = self.buf.getvalue(), load_key()
            sig = f"{self.exp}/{SIG_DIR}/{self.name}"
            old = _read_sig(self.fs, sig)
            self.fs.create_dir(f"{self.exp}/{SIG_DIR}", recursive=True)
            _put(self.fs, sig, json.dumps({"hmac": [digest(data, key), *old[:1]]}).encode())
            _put(self.fs, self.path, data)
        super().close()


def _put(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def _read_sig(fs, path: str) -> list[str]:
    try:
        with fs.open_input_stream(path) as f:
            return list(json.loads(f.read()).get("hmac", []))
    except (OSError, ValueError, pa.ArrowException):
        return []


def signing_fs(fs: pafs.FileSystem, exp: str) -> pafs.FileSystem:
    """`fs` signing the state files Ray writes at the top of `exp`; the key is checked here, before Ray writes
    anything (a key problem inside Ray's writes would surface wrapped in its errors)."""
    load_key()
    return pafs.PyFileSystem(_SigningHandler(fs, exp))


def verify(fs: pafs.FileSystem, exp: str, uri: str) -> None:
    """Refuse to resume if any state file at the top of the sweep folder lacks a valid signature of ours."""
    key = load_key()
    infos = fs.get_file_info(pafs.FileSelector(exp, allow_not_found=True))
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(STATE_SUFFIXES) or \
                info.base_name.startswith("."):
            continue
        with fs.open_input_stream(info.path) as f:
            data = f.read()
        if digest(data, key) not in _read_sig(fs, f"{exp}/{SIG_DIR}/{info.base_name}"):
            raise SweepError(f"refusing to resume {uri}: {info.base_name} was not written by hier-tl with this "
                             f"user's key ({key_file()}), so it could run planted code when unpickled. Start a new "
                             "sweep (--name NEW), or resume on the machine and account that started this one.")
