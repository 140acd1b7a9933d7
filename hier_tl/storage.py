"""Where a sweep's results live: a local folder or an object-store URI (s3://, gs://) via pyarrow."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .results import read_parquet, write_parquet


class Storage:
    """`<storage>/<name>/` for one sweep; every path method returns a string usable with `self.fs`."""

    def __init__(self, uri: str, name: str):
        if "://" in uri and not uri.startswith("file://"):
            import pyarrow.fs as pafs

            self.fs, root = pafs.FileSystem.from_uri(uri)
            self.uri = uri.rstrip("/")
        else:
            self.fs, root = None, str(Path(uri.removeprefix("file://")).expanduser().resolve())
            self.uri = root
        self.root = root.rstrip("/")
        self.name = name

    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def exp(self) -> str:
        """The experiment folder (for Ray: storage_path=self.uri, name=self.name)."""
        return f"{self.root}/{self.name}"

    @property
    def ray_path(self) -> str:
        """The experiment folder as Ray Tune names it (a local path, or the URI with its scheme)."""
        return self.exp if self.is_local else f"{self.uri}/{self.name}"

    def path(self, filename: str) -> str:
        return f"{self.exp}/{filename}"

    def exists(self, filename: str) -> bool:
        if self.is_local:
            return os.path.exists(self.path(filename))
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(filename)).type != pafs.FileType.NotFound

    def write_table(self, rows, filename: str) -> None:
        write_parquet(rows, self.path(filename), self.fs)

    def read_table(self, filename: str) -> pd.DataFrame:
        return read_parquet(self.path(filename), self.fs)

    def write_text(self, filename: str, text: str) -> None:
        if self.is_local:
            Path(self.exp).mkdir(parents=True, exist_ok=True)
            tmp = self.path(f".{filename}.{os.getpid()}.tmp")
            Path(tmp).write_text(text)
            os.replace(tmp, self.path(filename))
        else:
            with self.fs.open_output_stream(self.path(filename)) as f:
                f.write(text.encode())

    def read_text(self, filename: str) -> str:
        if self.is_local:
            return Path(self.path(filename)).read_text()
        with self.fs.open_input_stream(self.path(filename)) as f:
            return f.read().decode()
