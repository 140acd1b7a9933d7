"""Append-only Parquet tables: `<root>/<name>/` is a folder of part files that readers open as one table.

Writing costs O(rows appended), whatever the table already holds: rows are buffered and each flush
writes one new part, atomically (local: a temporary ".name" in the same folder, then a move; object
stores: a single PUT). Nothing is ever rewritten except by `compact()`.

Part names and the order of rows. A part is `part-<writer>-<seq:06d>.parquet`, or
`part-<writer>-<seq:06d>-compact.parquet` for one written by `compact()`. `writer` is the writer's
creation time in milliseconds (12 hex digits) then 4 random hex digits, so two writers never collide
and a later writer (a resumed sweep) sorts after an earlier one; `seq` counts the writer's parts,
compacted ones included. Parts are ordered by (writer, seq), rows by part then in the order appended,
and reading keeps, for each key, the LAST row in that order. This is exact for one writer appending in
order and for successive writers (resume); concurrent writers have no defined winner on a shared key.

The cost per flush stays O(1) amortised at any table size: every `MERGE_PARTS` flushes, a writer merges the
parts it wrote since its last merge into one (from the tables it still holds in memory: nothing is read
back), so the folder holds one part per `MERGE_PARTS` flushes and nothing is ever rewritten twice before
`compact()`, which merges everything (O(table)) and is called once, at the end of a sweep.

A table kept as a snapshot (`snapshot=True`, the trials table) compacts into the single file
`<root>/<name>.parquet` instead of a part: the file records, in its Parquet metadata, the parts it covers,
and readers skip those, so a compaction killed before deleting them reads the same.

Compaction is crash-safe: the compacted part holds, for each key, the last row of the parts it
replaces. Wherever it sorts among those parts, the last row of a key over them and it is that same row,
so a compaction killed before deleting them reads the same. It takes the compacting writer's next
`seq`, so this writer's later parts (and any later writer's) sort after it.
"""

from __future__ import annotations

import io
import re
import secrets
import time
import warnings
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..core.fileio import first_line, write_atomic

_PART = re.compile(r"^part-([0-9a-f]+)-(\d+)(-compact)?\.parquet$")
MERGE_PARTS = 64  # a writer merges its own latest parts into one every this many flushes
COVERS = b"hier_tl.covers"  # snapshot metadata: the part files it holds the rows of


class PartsTable:
    """One append-only table, `<root>/<name>/`, written by this process; `key` identifies a row."""

    def __init__(self, fs: pafs.FileSystem, root: str, name: str, key: tuple[str, ...], flush_rows: int = 5000,
                 flush_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic, snapshot: bool = False,
                 merge_parts: int = MERGE_PARTS):
        self.fs, self.root, self.name, self.key = fs, root.rstrip("/"), name, tuple(key)
        self.dir, self.snapshot, self.merge_parts = f"{self.root}/{name}", snapshot, merge_parts
        self.flush_rows, self.flush_seconds, self.clock = flush_rows, flush_seconds, clock
        self._recent: list[tuple[str, pa.Table]] = []  # this writer's parts since its last merge, as written
        self.writer = f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(2)}"
        self.seq = 0  # parts written by this writer
        self._buffer: list[dict] = []
        self._last_flush = clock()
        fs.create_dir(self.dir, recursive=True)

    def append(self, rows: Iterable[dict]) -> bool:
        """Buffer rows; flush if `flush_rows` are buffered or the last flush is `flush_seconds` old.
        Returns whether a part was written."""
        rows = list(rows)
        for r in rows:
            if any(k not in r for k in self.key):
                raise ValueError(f"{self.name}: row without key column(s) {self.key}: {sorted(r)}")
        self._buffer.extend(rows)
        return self.maybe_flush()

    def maybe_flush(self) -> bool:
        """Flush if due (also worth calling on a timer when appends are sparse)."""
        if len(self._buffer) >= self.flush_rows or self.clock() - self._last_flush >= self.flush_seconds:
            return self.flush()
        return False

    def flush(self) -> bool:
        """Write the buffered rows as one new part (none if the buffer is empty); returns whether it wrote."""
        self._last_flush = self.clock()
        if not self._buffer:
            return False
        self.seq += 1
        path, table = f"{self.dir}/part-{self.writer}-{self.seq:06d}.parquet", _to_table(self._buffer)
        _write_atomic(self.fs, path, table)
        self._buffer = []
        self._recent.append((path, table))
        if len(self._recent) >= self.merge_parts:
            self._merge_recent()
        return True

    def _merge_recent(self) -> None:
        """This writer's parts since its last merge, as one part (they are its newest: the merged part, taking
        its next `seq`, sorts where they did). Crash-safe as `compact` is."""
        recent, self._recent = self._recent, []
        self.seq += 1
        _write_atomic(self.fs, f"{self.dir}/part-{self.writer}-{self.seq:06d}-compact.parquet",
                      _as_arrow(_combine([t for _, t in recent], self.key)))
        for p, _ in recent:
            self.fs.delete_file(p)

    def close(self) -> None:
        """Flush what is left."""
        self.flush()

    def __enter__(self) -> "PartsTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows buffered, not yet written."""
        return len(self._buffer)

    def parts(self) -> list[str]:
        """Paths of the table's part files, oldest first (see the module doc for the order)."""
        return [p for p, _ in _list_parts(self.fs, self.dir)]

    def compact(self) -> int:
        """Flush, then replace every readable part by one holding the last row of each key (by the snapshot file
        for a snapshot table). Unreadable parts are left in place. Returns the rows kept. Cost O(table): call
        it once, at the end of a sweep."""
        self.flush() if self._buffer else None
        self._recent = []
        snap = f"{self.root}/{self.name}.parquet"
        base = _read_part(self.fs, snap, self.key) if self.snapshot and _is_file(self.fs, snap) else None
        covered = _covers(base)
        parts = [p for p, _ in _list_parts(self.fs, self.dir)]
        for p in (p for p in parts if p.rpartition("/")[2] in covered):  # left by a compaction killed mid-way
            self.fs.delete_file(p)
        read = [(p, t) for p in parts if p.rpartition("/")[2] not in covered
                and (t := _read_part(self.fs, p, self.key)) is not None]
        if len(read) < (1 if self.snapshot else 2):
            return sum(t.num_rows for _, t in read) + (base.num_rows if base is not None else 0)
        merged = _as_arrow(_combine(([base] if base is not None else []) + [t for _, t in read], self.key))
        if self.snapshot:
            names = ",".join(p.rpartition("/")[2] for p, _ in read).encode()
            _write_atomic(self.fs, snap, merged.replace_schema_metadata({**(merged.schema.metadata or {}),
                                                                          COVERS: names}))
        else:
            self.seq += 1  # this writer's next slot: its later parts sort after the compacted one
            _write_atomic(self.fs, f"{self.dir}/part-{self.writer}-{self.seq:06d}-compact.parquet", merged)
        for p, _ in read:  # a crash from here on leaves parts the compacted one already covers
            self.fs.delete_file(p)
        return merged.num_rows


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _covers(snapshot: pa.Table | None) -> set[str]:
    """The part files a snapshot already holds (read from its metadata)."""
    meta = (snapshot.schema.metadata or {}) if snapshot is not None else {}
    return set(filter(None, meta.get(COVERS, b"").decode().split(",")))


def read_table(fs: pafs.FileSystem, root: str, name: str, key: tuple[str, ...],
               snapshot: pa.Table | None = None) -> pd.DataFrame:
    """The table `<root>/<name>/` as one DataFrame (last row of each key, in the order of the module doc).
    The file `<root>/<name>.parquet` (a snapshot, or a table written before parts) is read first, as older
    than any part it does not cover (pass it as `snapshot` when the caller has read it already). Temporary
    files are ignored; parts that do not parse (damaged, truncated) or lack the key columns (another
    program's file) are skipped with a one-line warning naming them. Empty if nothing."""
    root = root.rstrip("/")
    legacy = f"{root}/{name}.parquet"
    if snapshot is None and _is_file(fs, legacy):
        snapshot = _read_part(fs, legacy, key)
    covered = _covers(snapshot)
    tables = [snapshot] + [_read_part(fs, p, key) for p, _ in _list_parts(fs, f"{root}/{name}")
                           if p.rpartition("/")[2] not in covered]
    tables = [t for t in tables if t is not None]
    if not tables:
        return pd.DataFrame()
    out = _combine(tables, tuple(key))
    return out.to_pandas() if isinstance(out, pa.Table) else out


def _list_parts(fs: pafs.FileSystem, folder: str) -> list[tuple[str, tuple[str, int]]]:
    """(path, order) of each part file in `folder`, oldest first; temporary (".") files skipped."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    parts = []
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith("."):
            continue
        m = _PART.match(info.base_name)
        if m is None:
            if info.base_name.endswith(".parquet"):
                warnings.warn(f"{info.path}: not a part file name, ignored", stacklevel=3)
            continue
        parts.append((info.path, (m.group(1), int(m.group(2)))))
    return sorted(parts, key=lambda p: p[1])


def _read_part(fs: pafs.FileSystem, path: str, key: tuple[str, ...] = ()) -> pa.Table | None:
    """One part file, or None (with a warning) if it does not parse as Parquet or lacks a `key` column."""
    try:
        with fs.open_input_file(path) as f:
            t = pq.read_table(f)
    except (pa.ArrowException, OSError, ValueError) as e:
        warnings.warn(f"{path}: unreadable Parquet part skipped, its rows are missing ({first_line(e, 160)}); "
                      "restore it from a copy, or delete it", stacklevel=3)
        return None
    missing = [k for k in key if k not in t.column_names]
    if missing:
        warnings.warn(f"{path}: not a part of this table (no {', '.join(missing)} column: another program's "
                      "file?), skipped; move it out of the folder", stacklevel=3)
        return None
    return t


def _combine(tables: list[pa.Table], key: tuple[str, ...]) -> pa.Table | pd.DataFrame:
    """Tables (in order; columns and types may differ) as one, keeping the last row of each key (every row
    if a key column is missing). Arrow types are kept where they unify, else a pandas DataFrame."""
    try:
        t = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # e.g. int in one, text in another
        df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        if key and all(k in df.columns for k in key):
            df = df.drop_duplicates(subset=list(key), keep="last").reset_index(drop=True)
        return df
    if key and all(k in t.column_names for k in key):
        t = t.filter(pa.array(~t.select(list(key)).to_pandas().duplicated(keep="last").to_numpy()))
    return t


def _as_arrow(t: pa.Table | pd.DataFrame) -> pa.Table:
    return t if isinstance(t, pa.Table) else pa.Table.from_pandas(t, preserve_index=False)


def _to_table(rows: list[dict]) -> pa.Table:
    """Rows (possibly with different keys) as an Arrow table, one column per key seen, types inferred.
    A column mixing types Arrow cannot hold together (1 and "a") is stored as text, with a warning."""
    cols = {}
    for k in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(k) for r in rows]
        try:
            cols[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            warnings.warn(f"column {k!r} mixes types: stored as text", stacklevel=4)
            cols[k] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(cols)


def _write_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Readers see the whole part or nothing (`fileio.write_atomic`)."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(fs, path, buf.getvalue())
