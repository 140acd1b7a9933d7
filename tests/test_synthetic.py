"""`hier-tl data synth`: same seed same bytes, a valid layout, and labelled novel test images."""

import filecmp
import os

import pandas as pd

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
