"""The dataset layer: what loads, what is refused (with file and line), and the decode cache."""

import csv
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from hier_tl.cli import main
from hier_tl.data import dataset as D


def rewrite_csv(path: Path, edit):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def set_cell(row_i, col, value):
    def edit(rows):
        rows[row_i][rows[0].index(col)] = value
        return rows
    return edit


def test_loads_layout_and_taxonomy_from_csv(synth_ds):
    tax = synth_ds.taxonomy
    assert len(synth_ds) == 3 * 3 * 16
    assert synth_ds.images.dtype.is_floating_point is False and synth_ds.images.shape[1:] == (3, 64, 64)
    assert tax.superclass.novel == 3 and tax.subclass.novel == 9
    assert len(tax.parent) == 9 and set(tax.parent.values()) == {0, 1, 2}
    for sup, sub in zip(synth_ds.superclass.tolist(), synth_ds.subclass.tolist()):
        assert tax.parent[sub] == sup








def _first_image(d: Path) -> str:
    with open(d / "train_data.csv") as f:
        return list(csv.reader(f))[1][0]


# Each fault: (name, function corrupting the copy, text the error must contain)
FAULTS = {
    "missing_folder": (lambda d: os.rename(d / "train_images", d / "imgs"), "train_images"),
    "missing_csv": (lambda d: os.remove(d / "train_data.csv"), "train_data.csv"),
    "missing_mapping": (lambda d: os.remove(d / "subclass_mapping.csv"), "subclass_mapping.csv"),
    "empty_csv": (lambda d: open(d / "train_data.csv", "w").close(), "empty"),
    "header_only_csv": (lambda d: rewrite_csv(d / "train_data.csv", lambda r: r[:1]), "no data rows"),
    "missing_column": (lambda d: rewrite_csv(d / "train_data.csv", lambda r: [x[:1] + x[2:] for x in r]),
                       "superclass_index"),
    "non_integer_index": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(3, "subclass_index", "two")),
                          "line 4"),
    "negative_index": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(2, "superclass_index", "-1")),
                       "line 3"),
    "out_of_mapping_index": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(5, "subclass_index", "40")),
                             "line 6"),
    "novel_label_in_training": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(2, "superclass_index", "3")),
                                "novel index"),
    "missing_image": (lambda d: os.remove(d / "train_images" / _first_image(d)), "does not exist"),
    "zero_byte_image": (lambda d: open(d / "train_images" / _first_image(d), "w").close(), "cannot be decoded"),
    "truncated_image": (lambda d: _truncate(d / "train_images" / _first_image(d)), "cannot be decoded"),
    "not_an_image": (lambda d: (d / "train_images" / _first_image(d)).write_text("hello"), "cannot be decoded"),
    "dot_dot_name": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(1, "image", "../x.jpg")), "escapes"),
    "absolute_name": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(1, "image", "/etc/passwd")), "escapes"),
    "symlink_outside": (lambda d: _symlink_out(d), "outside"),
    "mapping_without_novel": (lambda d: rewrite_csv(d / "superclass_mapping.csv", lambda r: r[:-1]), "novel"),
    "mapping_duplicate_index": (lambda d: rewrite_csv(d / "subclass_mapping.csv", lambda r: r + [["0", "again"]]),
                                "more than once"),
    "mapping_bad_header": (lambda d: rewrite_csv(d / "superclass_mapping.csv", lambda r: [["id", "name"]] + r[1:]),
                           "header"),
    "not_utf8": (lambda d: (d / "train_data.csv").write_bytes(b"image,superclass_index\n\xff\xfe,1\n"), "UTF-8"),
    "undecodable_in_subfolder": (lambda d: _bad_in_subfolder(d), "sub/x.jpg"),
    "duplicate_header_column": (lambda d: rewrite_csv(d / "train_data.csv", lambda r: [r[0][:3] + ["image"]] + r[1:]),
                                "more than once"),
    "lenient_integer": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(2, "subclass_index", "0_3")),
                        "not an integer"),
    "huge_index": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(2, "subclass_index", "9" * 30)),
                   "not an integer"),
    "nul_in_name": (lambda d: rewrite_csv(d / "train_data.csv", set_cell(2, "image", "a\x00.jpg")), "NUL"),
    "image_is_a_directory": (lambda d: _dir_instead_of_image(d), "is a directory"),
    "mapping_duplicate_class_name": (lambda d: rewrite_csv(d / "subclass_mapping.csv",
                                                           lambda r: r[:2] + [[r[2][0], r[1][1]]] + r[3:]),
                                     "used by two indices"),
    "mapping_is_a_directory": (lambda d: (os.remove(d / "superclass_mapping.csv"),
                                          os.mkdir(d / "superclass_mapping.csv")), "is a directory"),
    "same_file_two_spellings": (lambda d: rewrite_csv(d / "train_data.csv", lambda r: r + [
        ["./" + r[1][0], r[1][1], str((int(r[1][2]) + 1) % 9), ""]]), "different labels"),
    "dataset_is_a_file": (lambda d: (shutil.rmtree(d), d.write_text("x")), "dataset folder is a file"),
    "image_folder_is_a_file": (lambda d: (shutil.rmtree(d / "train_images"), (d / "train_images").write_text("x")),
                               "image folder is a file"),
    "image_is_a_pipe": (lambda d: (os.remove(d / "train_images" / _first_image(d)),
                                   os.mkfifo(d / "train_images" / _first_image(d))), "not a regular file"),
    "image_of_100_megapixels": (lambda d: (d / "train_images" / _first_image(d)).write_bytes(_png_header(10000, 10000)),
                                "pixels"),
    "image_of_400_megapixels": (lambda d: (d / "train_images" / _first_image(d)).write_bytes(_png_header(20000, 20000)),
                                "pixels"),
}


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (no pixel data): what a decompression bomb looks like to a decoder."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _bad_in_subfolder(d: Path):
    (d / "train_images" / "sub").mkdir()
    (d / "train_images" / "sub" / "x.jpg").write_bytes(b"junk")
    rewrite_csv(d / "train_data.csv", lambda r: r + [["sub/x.jpg", r[1][1], r[1][2], ""]])


def _dir_instead_of_image(d: Path):
    name = _first_image(d)
    os.remove(d / "train_images" / name)
    os.mkdir(d / "train_images" / name)


def _truncate(p: Path):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 3])


def _symlink_out(d: Path):
    target = d.parent / "outside.jpg"
    Image.new("RGB", (64, 64)).save(target)
    name = _first_image(d)
    os.remove(d / "train_images" / name)
    os.symlink(target, d / "train_images" / name)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_exits_2_naming_the_file(fault, synth_copy, capsys):
    corrupt, needle = FAULTS[fault]
    corrupt(synth_copy)
    assert main(["data", "check", str(synth_copy)]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err
    assert str(synth_copy) in err


def test_relabelled_duplicate_and_taxonomy_conflict_are_reported(synth_copy, capsys):
    def edit(rows):
        col_sub, col_sup = rows[0].index("subclass_index"), rows[0].index("superclass_index")
        dup = list(rows[1])
        dup[col_sub] = str((int(dup[col_sub]) + 1) % 9)
        other_sup = next(r for r in rows[2:] if r[col_sup] != rows[1][col_sup])
        conflict = list(other_sup)
        conflict[0] = "999.jpg"
        conflict[col_sub] = rows[1][col_sub]
        return rows + [dup, conflict]
    rewrite_csv(synth_copy / "train_data.csv", edit)
    assert main(["data", "check", str(synth_copy)]) == 2
    err = capsys.readouterr().err
    assert "listed again with different labels" in err
    assert "listed under superclass" in err


def test_all_problems_are_reported_not_only_the_first(synth_copy, capsys):
    rewrite_csv(synth_copy / "train_data.csv", set_cell(1, "subclass_index", "x"))
    rewrite_csv(synth_copy / "train_data.csv", set_cell(7, "superclass_index", "-5"))
    assert main(["data", "check", str(synth_copy)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "line 8" in err and "2 problem(s)" in err


def test_many_problems_are_capped_with_a_count(synth_copy, capsys):
    rewrite_csv(synth_copy / "train_data.csv",
                lambda r: [r[0]] + [[x[0], "nope", x[2], x[3]] for x in r[1:]])
    assert main(["data", "check", str(synth_copy)]) == 2
    err = capsys.readouterr().err
    assert "and 94 more" in err




def test_check_prints_a_summary(synth_dir, capsys):
    assert main(["data", "check", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    assert "144 training images, 3 superclasses, 9 subclasses" in out
    assert "largest/smallest ratio" in out and "64x64: 144" in out
    assert "test images: 60 found" in out


def test_undecodable_test_image_is_skipped_and_said(synth_copy, capsys):
    (synth_copy / "test_images" / "5.jpg").write_bytes(b"")
    imgs = D.load_images(synth_copy / "test_images")
    assert "5.jpg" in imgs.failed and "5.jpg" not in imgs.names and len(imgs.names) == 59
    assert imgs.names[:3] == ["0.jpg", "1.jpg", "2.jpg"]  # numeric order
    assert main(["data", "check", str(synth_copy)]) == 0
    assert "1 NOT decodable (predict skips them): 5.jpg" in capsys.readouterr().out


@pytest.mark.realdata
def test_real_dataset_summary():
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "nndl64"
    if not root.is_dir():
        pytest.skip("../shared/data/nndl64 not present")
    ds = D.load_dataset(root)
    assert len(ds) == 5029 and len(set(ds.superclass.tolist())) == 3 and len(set(ds.subclass.tolist())) == 78
    assert len(D.list_images(root / "test_images")) == 10313
