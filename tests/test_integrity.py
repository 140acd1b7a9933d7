"""What --resume trusts: state files signed by this user's key, checked before anything is unpickled."""

import errno
import json
import pickle
import threading

import pyarrow.fs as pafs
import pytest

from hier_tl.core.errors import StorageError, SweepError
from hier_tl.results import integrity


@pytest.fixture(autouse=True)
def key(tmp_path, monkeypatch):
    monkeypatch.setenv("HIER_TL_KEY_FILE", str(tmp_path / "key"))


def write(fs, path, data: bytes):
    with fs.open_output_stream(path) as f:
        f.write(data)


def test_files_written_through_the_signing_fs_verify(tmp_path):
    exp = str(tmp_path / "sweep")
    fs = integrity.signing_fs(pafs.LocalFileSystem(), exp)
    fs.create_dir(exp)
    write(fs, f"{exp}/tuner.pkl", pickle.dumps({"a": 1}))
    write(fs, f"{exp}/experiment_state-x.json", b"{}")
    fs.create_dir(f"{exp}/sub")
    write(fs, f"{exp}/sub/params.pkl", b"not a state file")  # below the top level: not signed, not checked
    integrity.verify(pafs.LocalFileSystem(), exp, exp)
    assert (tmp_path / "key").stat().st_mode & 0o077 == 0  # the key is its owner's alone
    assert sorted(p.name for p in (tmp_path / "sweep" / integrity.SIG_DIR).iterdir()) == [
        "experiment_state-x.json", "tuner.pkl"]


def test_a_planted_or_changed_pickle_is_refused_naming_it(tmp_path):
    exp = str(tmp_path / "sweep")
    fs = integrity.signing_fs(pafs.LocalFileSystem(), exp)
    fs.create_dir(exp)
    write(fs, f"{exp}/tuner.pkl", pickle.dumps({"a": 1}))
    (tmp_path / "sweep" / "searcher-state-x.pkl").write_bytes(b"planted")
    with pytest.raises(SweepError, match="searcher-state-x.pkl was not written by hier-tl"):
        integrity.verify(pafs.LocalFileSystem(), exp, exp)
    (tmp_path / "sweep" / "searcher-state-x.pkl").unlink()
    (tmp_path / "sweep" / "tuner.pkl").write_bytes(pickle.dumps({"a": 2}))  # same name, other content
    with pytest.raises(SweepError, match="tuner.pkl"):
        integrity.verify(pafs.LocalFileSystem(), exp, exp)


def test_another_users_key_is_not_trusted(tmp_path, monkeypatch):
    exp = str(tmp_path / "sweep")
    fs = integrity.signing_fs(pafs.LocalFileSystem(), exp)
    fs.create_dir(exp)
    write(fs, f"{exp}/tuner.pkl", b"x")
    monkeypatch.setenv("HIER_TL_KEY_FILE", str(tmp_path / "other-key"))
    with pytest.raises(SweepError, match="this user's key"):
        integrity.verify(pafs.LocalFileSystem(), exp, exp)


def test_a_driver_killed_between_signature_and_file_still_verifies(tmp_path):
    """The signature is written first and lists the previous hash: the old file still verifies."""
    exp = str(tmp_path / "sweep")
    fs = integrity.signing_fs(pafs.LocalFileSystem(), exp)
    fs.create_dir(exp)
    write(fs, f"{exp}/searcher-state-x.pkl", b"version 1")
    sig = tmp_path / "sweep" / integrity.SIG_DIR / "searcher-state-x.pkl"
    key = integrity.load_key()
    sig.write_text(json.dumps({"hmac": [integrity.digest(b"version 2", key), integrity.digest(b"version 1", key)]}))
    integrity.verify(pafs.LocalFileSystem(), exp, exp)  # killed before the file was replaced


def _key_path(tmp_path):
    return tmp_path / "key"


# Each case: (what is at the key's place, text the one-line error must hold besides the path)
BAD_KEYS = {
    "empty": (lambda p: p.write_bytes(b""), "holds 0 bytes"),
    "short": (lambda p: p.write_bytes(b"x" * (integrity.KEY_BYTES - 1)), f"holds {integrity.KEY_BYTES - 1} bytes"),
    "a_folder": (lambda p: p.mkdir(), "cannot read the signing key"),
    "parent_is_a_file": (lambda p: p.parent.write_text("x"), "cannot create the key"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_an_unusable_key_is_refused_naming_its_path(tmp_path, monkeypatch, case):
    make, needle = BAD_KEYS[case]
    path = tmp_path / "file" / "key" if case == "parent_is_a_file" else _key_path(tmp_path)
    make(path)
    monkeypatch.setenv("HIER_TL_KEY_FILE", str(path))
    exp = str(tmp_path / "sweep")
    for use in (integrity.load_key, lambda: integrity.signing_fs(pafs.LocalFileSystem(), exp),
                lambda: integrity.verify(pafs.LocalFileSystem(), exp, exp)):
        with pytest.raises(StorageError) as e:
            use()
        assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "sweep").exists()


def test_a_planted_pickle_signed_with_an_empty_key_is_not_trusted(tmp_path, monkeypatch):
    """An HMAC with an empty key is computable by anyone: such a key is refused before anything is unpickled."""
    exp = tmp_path / "sweep"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"planted")
    (exp / integrity.SIG_DIR).mkdir()
    (exp / integrity.SIG_DIR / "tuner.pkl").write_text(json.dumps({"hmac": [integrity.digest(b"planted", b"")]}))
    _key_path(tmp_path).write_bytes(b"")
    with pytest.raises(StorageError, match="holds 0 bytes"):
        integrity.verify(pafs.LocalFileSystem(), str(exp), str(exp))


def test_a_new_key_is_random_private_and_kept(tmp_path):
    key = integrity.load_key()
    assert len(key) == integrity.KEY_BYTES and key != b"\0" * integrity.KEY_BYTES
    assert _key_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert integrity.load_key() == key and [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary left


def test_many_simultaneous_first_uses_share_one_complete_key(tmp_path):
    n = 400
    barrier, keys, errors = threading.Barrier(n), [], []

    def first_use():
        barrier.wait()
        try:
            keys.append(integrity.load_key())
        except Exception as e:  # noqa: BLE001 - any failure of any thread fails the test
            errors.append(repr(e))
    threads = [threading.Thread(target=first_use) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(keys) == n
    assert set(keys) == {_key_path(tmp_path).read_bytes()} and len(keys[0]) == integrity.KEY_BYTES
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_a_key_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(integrity.os, "fsync", full)
    with pytest.raises(StorageError) as e:
        integrity.load_key()
    assert str(e.value).startswith(f"cannot create the key at {_key_path(tmp_path)}: no space left on the device")
    assert list(tmp_path.iterdir()) == []  # no key, no temporary file
