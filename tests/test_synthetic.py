"""`hier-tl data synth`: same seed same bytes, a valid layout, labelled novel test images; bad values, an
existing folder and a full disk are one line, with nothing written."""

import errno
import filecmp
import os

import pandas as pd
import pytest
from PIL import Image

from hier_tl.cli import main
from hier_tl.data.dataset import load_dataset


def _tree(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    args = ["--per-class", "3", "--subs-per-super", "2", "--test-per-class", "1"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main(["data", "synth", str(tmp_path / name), "--seed", seed, *args]) == 0
    files = _tree(tmp_path / "a")
    assert files == _tree(tmp_path / "b")
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(tmp_path / "a", tmp_path / "c", [f for f in files if f.endswith(".jpg")],
                                      shallow=False)
    assert len(mismatch) > 0.9 * len([f for f in files if f.endswith(".jpg")])


def test_layout_is_valid_and_test_labels_mark_novel(synth_dir):
    ds = load_dataset(synth_dir)
    labels = pd.read_csv(synth_dir / "test_labels.csv")
    assert list(labels.columns) == ["image", "superclass_index", "subclass_index"]
    assert len(labels) == len(os.listdir(synth_dir / "test_images"))
    novel_super, novel_sub = ds.taxonomy.superclass.novel, ds.taxonomy.subclass.novel
    seen = labels[labels.subclass_index != novel_sub]
    novel_sub_only = labels[(labels.subclass_index == novel_sub) & (labels.superclass_index != novel_super)]
    novel_both = labels[labels.superclass_index == novel_super]
    assert len(seen) and len(novel_sub_only) and len(novel_both)
    assert (novel_both.subclass_index == novel_sub).all()  # a novel superclass has a novel subclass
    assert all(ds.taxonomy.parent[s] == p for s, p in zip(seen.subclass_index, seen.superclass_index))


def test_bad_arguments_are_a_clear_error(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "x"), "--n-super", "0"]) == 2
    assert "n_super" in capsys.readouterr().err


# Bad values for `data synth` (and a sweep's `synthetic:`): (option, value, the key the one error line names)
BAD = [("--n-super", "0", "n_super"), ("--n-super", "8", "n_super"), ("--subs-per-super", "0", "subs_per_super"),
       ("--novel-subs-per-super", "-1", "novel_subs_per_super"), ("--per-class", "0", "per_class"),
       ("--test-per-class", "-2", "test_per_class"), ("--size", "8", "size"), ("--size", "100000", "size"),
       ("--seed", "-1", "seed"), ("--per-class", "999999", "images (limit 1,000,000)")]


@pytest.mark.parametrize("option,value,key", BAD)
def test_bad_values_are_one_line_and_write_nothing(tmp_path, capsys, option, value, key):
    assert main(["data", "synth", str(tmp_path / "x"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", ["a_file", "a_folder_with_a_file"])
def test_an_existing_file_or_dataset_is_never_written_over(tmp_path, capsys, existing):
    out = tmp_path / "x"
    if existing == "a_file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / "train_data.csv").write_text("keep me")
    assert main(["data", "synth", str(out), "--per-class", "1"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (out if existing == "a_file" else out / "train_data.csv").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["x"] if existing == "a_file" else ["train_data.csv", "x"])


def test_a_full_disk_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    real = Image.Image.save
    calls = []

    def save(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) == 5:  # the disk fills up at the fifth image
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fp, *a, **k)
    monkeypatch.setattr(Image.Image, "save", save)
    assert main(["data", "synth", str(tmp_path / "x"), "--per-class", "2", "--subs-per-super", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot write {tmp_path / 'x'}: no space left on the device"]
    assert list(tmp_path.iterdir()) == []
