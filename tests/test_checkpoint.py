"""Checkpoints: atomic, and a damaged, truncated, foreign or malicious file is one line naming it."""

import os

import pytest
import torch

from hier_tl.cli import main
from hier_tl.core.errors import CheckpointError
from hier_tl.train import checkpoint


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/hier-tl-pwned",))


def damage(kind: str, good: bytes) -> bytes:
    return {"truncated": good[: len(good) // 2], "empty": b"", "garbage": os.urandom(4096),
            "foreign": _save({"weights": torch.zeros(2)}), "malicious": _save(Evil())}[kind]


def _save(obj) -> bytes:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind,needle", [("truncated", "not a complete checkpoint"), ("empty", "not a complete"),
                                         ("garbage", "not a complete"), ("foreign", "not a hier-tl checkpoint"),
                                         ("malicious", "refused")])
def test_a_bad_checkpoint_is_one_line_naming_the_file(run_dir, tmp_path, kind, needle, capsys, synth_dir):
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(damage(kind, (run_dir / "checkpoint.pt").read_bytes()))
    with pytest.raises(CheckpointError, match=needle):
        checkpoint.load(bad / "checkpoint.pt")
    assert main(["predict", str(bad), "--images", str(synth_dir / "test_images"), "--out", str(tmp_path / "p.csv"),
                 "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad / "checkpoint.pt") in err[0] and "Traceback" not in err[0]
    assert not os.path.exists("/tmp/hier-tl-pwned") and not (tmp_path / "p.csv").exists()


def test_a_good_checkpoint_round_trips_from_bytes(run_dir):
    a = checkpoint.load(run_dir / "checkpoint.pt")
    b = checkpoint.load((run_dir / "checkpoint.pt").read_bytes(), name="s3://x/checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["format"] == checkpoint.FORMAT
    model, cfg, space, norm = checkpoint.model_from(b)
    assert cfg.backbone == "cnn_tiny" and len(space.subs) == 9


@pytest.mark.parametrize("target", ["checkpoint.pt", "a_folder", "new/sub/checkpoint.pt"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_old_checkpoint(run_dir, tmp_path, monkeypatch, target):
    import errno
    from pathlib import Path

    from hier_tl.core.errors import StorageError

    state = checkpoint.load(run_dir / "checkpoint.pt")
    where = tmp_path / target
    final = where / "checkpoint.pt" if target == "a_folder" else where
    if target != "new/sub/checkpoint.pt":
        checkpoint.save(state, where)
    before = final.read_bytes() if final.exists() else None
    real = Path.write_bytes

    def full_disk(self, data):
        real(self, data[: len(data) // 2])  # half of it reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(StorageError) as e:
        checkpoint.save({**state, "epoch": 2}, where)
    assert str(e.value) == f"cannot write {final}: no space left on the device"
    assert (final.read_bytes() if final.exists() else None) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
