"""Where results live: local folders and object-store URIs, and the multi-host storage rule; a damaged or
foreign trials table, and a full disk, are one line naming the file."""

import contextlib
import errno
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from hier_tl.core.errors import StorageError
from hier_tl.results.storage import Storage


def test_local_storage_round_trip(tmp_path):
    st = Storage(str(tmp_path / "res"), "exp")
    assert st.is_local and st.exp == str(tmp_path / "res" / "exp") and st.uri == st.exp
    st.write_trials([{"trial_id": "a", "status": "completed", "epochs_run": 1, "x": 1}])
    st.write_text("s.yaml", "x: 1\n")
    with st.table("epochs") as t:
        t.append([{"trial_id": "a", "epoch": 1, "m": 0.5}])
    assert st.exists("trials.parquet") and st.read("trials").x.tolist() == [1]
    assert st.read("epochs").m.tolist() == [0.5] and st.read("thresholds").empty
    assert st.read_text("s.yaml") == "x: 1\n" and not any(p.name.endswith(".tmp") for p in (tmp_path / "res" / "exp").iterdir())
    assert Storage(f"file://{tmp_path}/res", "exp").is_local
    assert Storage.open(st.uri).exp == st.exp  # what a sweep prints opens the same folder


def test_object_store_uri_goes_through_pyarrow():
    root = "s3://bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    st = Storage(root, "exp")
    assert not st.is_local and st.exp == "bucket/prefix/exp" and type(st.fs).__name__ == "S3FileSystem"
    # the printed URI keeps scheme and query, and opens the same sweep folder again
    assert st.uri == "s3://bucket/prefix/exp?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    again = Storage.open(st.uri)
    assert again.exp == st.exp and again.name == "exp" and again.uri == st.uri


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", "", ".hidden", "x y"])
def test_names_are_single_path_segments(tmp_path, name):
    from hier_tl.core.errors import ConfigError
    with pytest.raises(ConfigError, match="not a valid sweep name"):
        Storage(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []  # nothing written outside (or inside) the storage






def test_a_file_uri_names_the_same_local_folder_as_its_path(tmp_path):
    for uri in (f"file://{tmp_path}/sweep", str(tmp_path / "sweep")):
        st = Storage.open(uri)
        assert (st.uri, st.name, st.is_local) == (str(tmp_path / "sweep"), "sweep", True)


def _trials(st):
    st.write_trials([{"trial_id": "a", "status": "completed", "epochs_run": 2}])
    return (Path(st.exp) / "trials.parquet").read_bytes()


# What trials.parquet may hold that hier-tl did not write: (bytes from a good one, text the one-line error holds)
DAMAGED_TRIALS = {
    "not_parquet": (lambda good: b"hello, not parquet", "not a Parquet file, or a damaged one"),
    "empty": (lambda good: b"", "not a Parquet file, or a damaged one"),
    "truncated": (lambda good: good[: len(good) // 2], "not a Parquet file, or a damaged one"),
    "footer_only": (lambda good: good[-8:], "not a Parquet file, or a damaged one"),
    "other_columns": (lambda good: _parquet({"a": [1], "b": ["x"]}), "is not a hier-tl results folder"),
    "no_columns": (lambda good: _parquet({}), "is not a hier-tl results folder"),
    "no_status": (lambda good: _parquet({"trial_id": ["a"], "epochs_run": [1]}), "(no status column"),
    "text_epochs": (lambda good: _parquet({"trial_id": ["a"], "status": ["completed"], "epochs_run": ["two"]}),
                    "epochs_run column holds no numbers"),
}


def _parquet(cols: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(DAMAGED_TRIALS))
def test_a_damaged_or_foreign_trials_table_is_one_line_naming_it(tmp_path, case):
    st = Storage(str(tmp_path), "s")
    damage, needle = DAMAGED_TRIALS[case]
    (Path(st.exp) / "trials.parquet").write_bytes(damage(_trials(st)))
    with pytest.raises(StorageError) as e:
        st.read("trials")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and (st.exp in msg)
    assert "trials.parquet" in msg


class FullDisk(pafs.LocalFileSystem):
    """The local file system, whose writes stop half-way with ENOSPC, as a full disk does."""

    @contextlib.contextmanager
    def open_output_stream(self, path, *a, **k):
        with super().open_output_stream(path) as f:
            yield _Half(f)


class _Half:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


# Every way Storage writes, on a full disk: (what, how, the file named)
WRITES = [
    ("trials", lambda st: st.write_trials([{"trial_id": "b", "status": "running", "epochs_run": 0}]), "trials.parquet"),
    ("text", lambda st: st.write_text("sweep.yaml", "name: s\n"), "sweep.yaml"),
    ("bytes_in_a_new_folder", lambda st: st.write_bytes("refit/t/checkpoint.pt", b"x" * 100), "refit/t/checkpoint.pt"),
    ("table_part", lambda st: st.guard(lambda: _flush(st), "write", "epochs"), "epochs"),
]


def _flush(st):
    t = st.table("epochs")
    t.append([{"trial_id": "a", "epoch": 1, "acc": 0.5}])
    t.flush()


@pytest.mark.parametrize("what,write,named", WRITES, ids=[w[0] for w in WRITES])
def test_a_full_disk_is_one_line_and_leaves_the_old_files_whole(tmp_path, what, write, named):
    st = Storage(str(tmp_path), "s")
    good = _trials(st)
    before = {p: p.read_bytes() for p in Path(st.exp).rglob("*") if p.is_file()}
    st.fs = FullDisk()
    with pytest.raises(StorageError) as e:
        write(st)
    assert str(e.value) == f"cannot write {st.exp}/{named}: no space left on the device"
    after = {p: p.read_bytes() for p in Path(st.exp).rglob("*") if p.is_file()}
    assert after == before and (Path(st.exp) / "trials.parquet").read_bytes() == good  # nothing new, nothing torn
