"""Where a sweep's results live: `<root>/<name>/` on a local disk or in object storage (s3://, gs://, with
query parameters such as `endpoint_override` kept), read and written through one pyarrow filesystem.

Tables, each append-only (`tables.PartsTable`, O(1) amortised per row whatever the sweep's size) and read as
one table: `trials/` (a row each time a trial's status or summary changes, compacted into the snapshot
`trials.parquet`, which holds one row per trial once a sweep ends), `epochs/` and `thresholds/`.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..core.errors import StorageError
from ..core.fileio import check_name, describe, first_line, write_atomic
from .tables import PartsTable, read_table

KEYS = {"trials": ("trial_id",), "epochs": ("trial_id", "epoch"),
        "thresholds": ("trial_id", "epoch", "score", "threshold")}
TRIAL_COLUMNS = ("trial_id", "status", "epochs_run")  # every row the trial ledger writes has them


def is_uri(text: str) -> bool:
    return "://" in str(text) and not str(text).startswith("file://")


class Storage:
    """One sweep folder. `uri` is the exact string to pass back to report / best / predict / --resume."""

    def __init__(self, root: str, name: str):
        self.name = check_name(name)
        root = str(root)
        if is_uri(root):
            try:
                self.fs, base = pafs.FileSystem.from_uri(root)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:
                raise StorageError(f"--storage {root}: not a storage URI pyarrow can open ({e})") from None
            parts = urlsplit(root)
            self._query = f"?{parts.query}" if parts.query else ""
            self._scheme = parts.scheme
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root.removeprefix("file://")).expanduser().resolve())
            self._query = self._scheme = ""
        self.root = base.rstrip("/")
        self.exp = f"{self.root}/{self.name}"

    @classmethod
    def open(cls, uri: str) -> "Storage":
        """The sweep folder at `uri` (what a sweep prints as its results)."""
        uri = str(uri)
        uri = uri.removeprefix("file://") if uri.startswith("file://") else uri  # file:///a/b is the folder /a/b
        parts = urlsplit(uri) if is_uri(uri) else None
        path = (parts.path if parts else str(Path(uri).expanduser().resolve())).rstrip("/")
        head, _, name = path.rpartition("/")
        if parts:
            root = f"{parts.scheme}://{parts.netloc}{head}" + (f"?{parts.query}" if parts.query else "")
        else:
            root = head or "/"
        return cls(root, name)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def uri(self) -> str:
        return self.exp if self.is_local else f"{self._scheme}://{self.exp}{self._query}"

    @property
    def root_uri(self) -> str:
        return self.root if self.is_local else f"{self._scheme}://{self.root}{self._query}"

    def file_uri(self, rel: str) -> str:
        """A file of the sweep as a URI (query parameters after the path)."""
        return self.path(rel) if self.is_local else f"{self._scheme}://{self.path(rel)}{self._query}"

    def path(self, rel: str) -> str:
        return f"{self.exp}/{rel}"

    def exists(self, rel: str = "") -> bool:
        return self.guard(lambda: self.fs.get_file_info(self.path(rel).rstrip("/")).type != pafs.FileType.NotFound,
                          "read")

    def read_bytes(self, rel: str) -> bytes:
        def read():
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        return self.guard(read, "read", rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: a temporary file and a move, or one PUT to an object store."""
        def write():
            if self.is_local:
                self.fs.create_dir(self.path(rel).rpartition("/")[0], recursive=True)
            write_atomic(self.fs, self.path(rel), data)
        self.guard(write, "write", rel)

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def delete(self, rel: str) -> None:
        self.guard(lambda: self.fs.delete_file(self.path(rel)), "delete", rel)

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (empty when it does not exist)."""
        sel = pafs.FileSelector(self.path(rel).rstrip("/"), allow_not_found=True)
        return sorted(i.base_name for i in self.guard(lambda: self.fs.get_file_info(sel), "list", rel))

    def local_dir(self, rel: str) -> Path | None:
        """A folder of the sweep as a local path (None in object storage), for what needs a real file system."""
        return Path(self.path(rel)) if self.is_local else None

    def remove_all(self) -> None:
        """Delete the whole sweep folder (a start that was refused before any trial ran)."""
        self.guard(lambda: self.fs.delete_dir(self.exp) if self.exists() else None, "delete")

    def table(self, name: str, **kw) -> PartsTable:
        """The append-only table `name`; the trials table compacts into its snapshot file trials.parquet."""
        return self.guard(lambda: PartsTable(self.fs, self.exp, name, KEYS[name], snapshot=name == "trials", **kw),
                          "write", name)

    def write_trials(self, rows: list[dict]) -> None:
        """Write a whole trials table as the snapshot trials.parquet (tools and tests; a sweep appends parts)."""
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), buf)
        self.write_bytes("trials.parquet", buf.getvalue())

    def has_trials(self) -> bool:
        """Whether a sweep has recorded trials here (its snapshot file or parts of the trials table)."""
        return self.exists("trials.parquet") or bool(self.listdir("trials"))

    def read(self, name: str) -> pd.DataFrame:
        """A results table as one DataFrame (empty if the sweep has none yet). A damaged trials.parquet, or one
        without the ledger's columns (another program's), is a StorageError naming it; unreadable or foreign
        parts of the other tables are skipped with a warning (`tables.read_table`)."""
        if name != "trials":
            return self.guard(lambda: read_table(self.fs, self.exp, name, KEYS[name]), "read", name)
        if not self.has_trials():
            return pd.DataFrame()
        snapshot = None
        if self.exists("trials.parquet"):
            data, where = self.read_bytes("trials.parquet"), self.file_uri("trials.parquet")
            try:
                snapshot = pq.read_table(io.BytesIO(data))
            except (pa.ArrowException, OSError, ValueError) as e:
                raise StorageError(f"cannot read {where}: not a Parquet file, or a damaged one "
                                   f"({first_line(e, 160)}); restore it from a copy") from None
        df = self.guard(lambda: read_table(self.fs, self.exp, "trials", KEYS["trials"], snapshot), "read", "trials")
        missing = [k for k in TRIAL_COLUMNS if k not in df.columns]
        if missing or not pd.api.types.is_numeric_dtype(df["epochs_run"]):
            why = f"no {', '.join(missing)} column" if missing else "its epochs_run column holds no numbers"
            raise StorageError(f"{self.uri} is not a hier-tl results folder: its trials.parquet is not the table "
                               f"hier-tl writes ({why}; columns: {', '.join(map(str, df.columns[:6])) or 'none'})")
        return df

    def guard(self, fn, what: str, rel: str = ""):
        """Run `fn`; a filesystem failure becomes one StorageError line naming this folder."""
        try:
            return fn()
        except (OSError, pa.ArrowException) as e:
            why = describe(e) if isinstance(e, OSError) and e.errno else first_line(e)
            raise StorageError(f"cannot {what} {self.file_uri(rel) if rel else self.uri}: {why}") from None

    def size(self, rel: str) -> int | None:
        """Bytes of the file `rel`; None when there is none."""
        info = self.guard(lambda: self.fs.get_file_info(self.path(rel)), "read", rel)
        return info.size if info.type == pafs.FileType.File else None

    def upload(self, rel: str, src: Path | str, chunk: int = 1 << 24) -> None:
        """Copy the local file `src` to `rel` a chunk at a time (a file larger than memory streams through),
        complete or not at all: one upload on an object store, else a temporary name and a move."""
        import os
        import secrets

        target = self.path(rel)
        folder, _, base = target.rpartition("/")
        tmp = f"{folder}/.{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp" if self.is_local else target

        def copy():
            if self.is_local:
                self.fs.create_dir(folder, recursive=True)
            try:
                with open(src, "rb") as f, self.fs.open_output_stream(tmp) as out:
                    while block := f.read(chunk):
                        out.write(block)
                if tmp != target:
                    self.fs.move(tmp, target)
            finally:
                if tmp != target and self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self.fs.delete_file(tmp)
        self.guard(copy, "write", rel)

    def download(self, rel: str, dest: Path | str, progress=None, chunk: int = 1 << 24) -> None:
        """Copy `rel` to the local file `dest` a chunk at a time, complete or not at all (a temporary name and
        a rename); `progress(done, total)`, in bytes, after every chunk."""
        from ..core.fileio import atomic_path

        def copy():
            total, done = self.fs.get_file_info(self.path(rel)).size, 0
            with atomic_path(dest) as tmp, open(tmp, "wb") as f, self.fs.open_input_stream(self.path(rel)) as src:
                while block := src.read(chunk):
                    f.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        self.guard(copy, "read", rel)


def local_path(uri: str) -> Path | None:
    """A local folder for `uri`, or None for an object-store URI."""
    return None if is_uri(uri) else Path(str(uri).removeprefix("file://")).expanduser()
