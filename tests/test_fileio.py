"""core.fileio: a file appears complete or not at all, a failed write says why in a few words, sweep names
are one safe folder name, and the cache lives where HIER_TL_CACHE says."""

import errno
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from hier_tl.core import fileio
from hier_tl.core.errors import ConfigError, StorageError


def test_write_text_creates_the_folders_and_replaces_the_old_content(tmp_path):
    p = tmp_path / "a" / "b" / "config.yaml"
    fileio.write_text(p, "lr: 0.1\n")
    fileio.write_text(p, "lr: 0.2\n")
    fileio.write_bytes(tmp_path / "a" / "x.bin", b"\x00\x01")
    assert p.read_text() == "lr: 0.2\n" and (tmp_path / "a" / "x.bin").read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in p.parent.iterdir()) == ["config.yaml"]  # no temporary file left


def test_a_full_disk_mid_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "metrics.parquet"
    p.write_text("old, complete")
    with pytest.raises(StorageError) as e:
        with fileio.atomic_path(p) as tmp:
            tmp.write_text("half of the new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(e.value) == f"cannot write {p}: no space left on the device"
    assert p.read_text() == "old, complete"
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.parquet"]


def test_an_exception_that_is_not_an_os_error_also_removes_the_temporary_file_and_propagates(tmp_path):
    p = tmp_path / "config.yaml"
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_path(p) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EACCES, "permission denied (or a read-only file system)"),
    (errno.EPERM, "permission denied (or a read-only file system)"),
    (errno.EROFS, "permission denied (or a read-only file system)"),
    (errno.ENOENT, os.strerror(errno.ENOENT)),  # anything else: the system's own words
])
def test_describe_says_what_went_wrong_in_a_few_words(code, words):
    assert fileio.describe(OSError(code, os.strerror(code), "/x")) == words


def test_write_atomic_through_a_pyarrow_filesystem(tmp_path):
    fs = pafs.LocalFileSystem()
    fileio.write_atomic(fs, f"{tmp_path}/trials.parquet", b"new")
    fileio.write_atomic(fs, f"{tmp_path}/trials.parquet", b"newer")
    assert (tmp_path / "trials.parquet").read_bytes() == b"newer"
    assert [x.name for x in tmp_path.iterdir()] == ["trials.parquet"]


def test_write_atomic_that_cannot_move_into_place_removes_its_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: the final move fails
    with pytest.raises(OSError):
        fileio.write_atomic(pafs.LocalFileSystem(), f"{tmp_path}/taken", b"data")
    assert [x.name for x in tmp_path.iterdir()] == ["taken"] and list((tmp_path / "taken").iterdir()) == []


@pytest.mark.parametrize("name", ["search", "a", "0", "run-1.2_b", "Sweep_2024-01-01", "x" * 128, "a..b"])
def test_check_name_accepts_one_folder_name(name):
    assert fileio.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/abs", "-a", ".hidden", "_a", "a b", "x" * 129,
                                  "naïve", "a\n", "a\\b", 3, None])
def test_check_name_refuses_anything_else_naming_the_key(name):
    with pytest.raises(ConfigError, match=r"^name: .* is not a valid sweep name: use one folder name"):
        fileio.check_name(name, "name")


def test_the_cache_folder_is_hier_tl_cache_else_under_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HIER_TL_CACHE", str(tmp_path / "c"))
    assert fileio.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HIER_TL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fileio.cache_dir() == Path(tmp_path / "home" / ".cache" / "hier_tl")


def test_a_lock_makes_processes_take_turns_and_says_when_it_waits(tmp_path):
    import subprocess
    import sys
    import time

    lock = tmp_path / "sub" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom hier_tl.core.fileio import locked\n"
        f"with locked(Path({str(lock)!r})):\n    print('held', flush=True)\n    time.sleep(1.5)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waited, t0 = [], time.monotonic()
    with fileio.locked(lock, on_wait=lambda: waited.append(True)):
        got = time.monotonic() - t0
    holder.wait(timeout=30)
    assert waited == [True] and got > 0.5  # it waited for the other process, and said so once
    waited.clear()
    with fileio.locked(lock, on_wait=lambda: waited.append(True)):
        pass
    assert waited == []  # free: no wait, nothing said
