"""The predictions CSV: well-formed for any file name, every skipped image reported, written atomically."""

import shutil

import pandas as pd

from hier_tl.cli import main


def test_odd_file_names_are_quoted_or_refused_and_said(run_dir, synth_dir, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = sorted((synth_dir / "test_images").iterdir())
    names = ["1.jpg", "a,b.jpg", 'say "hi".jpg', "tab\there.jpg", "new\nline.jpg", "é ü.jpg"]
    for name, s in zip(names, src):
        shutil.copy(s, imgs / name)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), "--images", str(imgs), "--out", str(out), "--threshold", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "2 image(s) skipped" in err and "'tab\\there.jpg'" in err and "'new\\nline.jpg'" in err
    df = pd.read_csv(out)  # a standard reader gets exactly one row per kept image back
    assert sorted(df.image) == sorted(["1.jpg", "a,b.jpg", 'say "hi".jpg', "é ü.jpg"])
    assert df.superclass_index.dtype.kind == "i" and df.subclass_index.dtype.kind == "i"


def test_a_failed_write_leaves_no_partial_csv(run_dir, synth_dir, tmp_path, monkeypatch, capsys):
    import errno
    from pathlib import Path

    out = tmp_path / "p.csv"
    out.write_text("old predictions\n")
    real = Path.write_text

    def full_disk(self, *a, **k):
        if self.name.endswith(".tmp"):
            real(self, "partial", **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["predict", str(run_dir), "--images", str(synth_dir / "test_images"), "--out", str(out),
                 "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write {out}: no space left on the device"
    assert out.read_text() == "old predictions\n" and [p.name for p in tmp_path.iterdir()] == ["p.csv"]
