"""What --resume trusts: state files signed by this user's key, checked before anything is unpickled."""

import json
import pickle

import pyarrow.fs as pafs
import pytest

from hier_tl.core.errors import SweepError
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
