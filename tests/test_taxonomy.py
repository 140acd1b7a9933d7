"""data.taxonomy: the mapping CSVs (every problem names the file and line) and the label space of the two heads."""

import json

import pytest
import torch

from hier_tl.data.taxonomy import (
    NOVEL,
    LabelSpace,
    Level,
    parse_int,
    read_csv,
    read_level,
)


@pytest.mark.parametrize("raw, want", [
    ("3", 3), (" -2 ", -2), ("007", 7), (str(2**31 - 1), 2**31 - 1), (str(-(2**31 - 1)), -(2**31 - 1)),
    (str(2**31), None), ("9" * 30, None), ("", None), ("1.0", None), ("+1", None), ("0_3", None), ("1e3", None),
    ("٣", None), ("x", None),  # int() would take the Arabic-Indic digit and the underscore
])
def test_parse_int_is_strict(raw, want):
    assert parse_int(raw) == want


def write(tmp_path, text: str | bytes, name: str = "subclass_mapping.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_read_csv_gives_line_numbers_skipping_blank_lines_and_a_byte_order_mark(tmp_path):
    p = write(tmp_path, "\ufeffIndex, Class \n0,dog\n\n1,cat\n", "m.csv")
    problems = []
    assert read_csv(p, ("index", "class"), "mapping file", problems) == \
        [(2, {"index": "0", "class": "dog"}), (4, {"index": "1", "class": "cat"})]
    assert problems == []


@pytest.mark.parametrize("text, problem", [
    (None, "{p}: mapping file is missing"),
    ("", "{p}: empty file (expected header index,class)"),
    ("index,index,class\n0,0,a\n", "{p} line 1: column(s) index appear more than once"),
    ("id,name\n0,a\n", "{p} line 1: missing required column(s) index, class (header must contain index,class; "
                       "found ['id', 'name'])"),
    (b"index,class\n0,\xff\n", "{p}: cannot be parsed as a UTF-8 CSV"),
])
def test_read_csv_refuses_a_file_it_cannot_use_naming_it(tmp_path, text, problem):
    p = tmp_path / "m.csv" if text is None else write(tmp_path, text, "m.csv")
    problems = []
    assert read_csv(p, ("index", "class"), "mapping file", problems) is None
    assert len(problems) == 1 and problems[0].startswith(problem.format(p=p))


def test_read_csv_names_a_folder_in_place_of_the_file(tmp_path):
    problems = []
    assert read_csv(tmp_path, ("index",), "mapping file", problems) is None
    assert problems == [f"{tmp_path}: mapping file is a directory"]


def test_read_csv_keeps_the_good_rows_and_names_the_lines_of_the_bad_ones(tmp_path):
    p = write(tmp_path, "index,class\n0,a\n1,b,extra\n2\n3,c\n", "m.csv")
    problems = []
    rows = read_csv(p, ("index", "class"), "mapping file", problems)
    assert [n for n, _ in rows] == [2, 5]
    assert problems == [f"{p} line 3: more fields than header columns",
                        f"{p} line 4: too few fields (expected index,class, got ['2'])"]


def test_read_level_finds_the_known_classes_and_the_novel_index(tmp_path):
    level = read_level(write(tmp_path, "index,class\n0,bird\n1,dog\n2,Novel\n3,reptile\n"), [])
    assert level == Level(names={0: "bird", 1: "dog", 3: "reptile"}, novel=2)  # 'novel' in any case


@pytest.mark.parametrize("text, problem", [
    ("index,class\n0,a\n1,b\n", "{p}: needs exactly one row whose class is 'novel', found 0"),
    ("index,class\n0,a\n1,novel\n2,novel\n", "{p}: needs exactly one row whose class is 'novel', found 2"),
    ("index,class\n0,novel\n", "{p}: no known (non-novel) classes"),
    ("index,class\n0,a\n0,b\n1,novel\n", "{p} line 3: index 0 appears more than once"),
    ("index,class\n0,a\n1,a\n2,novel\n", "{p} line 3: class name 'a' is used by two indices"),
    ("index,class\n-1,a\n1,b\n2,novel\n", "{p} line 2: index -1 is negative"),
    ("index,class\n0,a\n1, \n2,novel\n", "{p} line 3: index 1 has an empty class name"),
    ("index,class\n0,a\none,b\n2,novel\n", "{p} line 3: index 'one' is not an integer (below 2^31)"),
])
def test_read_level_names_the_file_and_line_of_each_problem(tmp_path, text, problem):
    p = write(tmp_path, text)
    problems = []
    assert read_level(p, problems) is None
    assert problem.format(p=p) in problems


def test_read_level_reports_every_problem_of_a_file_at_once(tmp_path):
    p = write(tmp_path, "index,class\n0,a\n0,b\nx,c\n")
    problems = ["an earlier problem"]
    assert read_level(p, problems) is None
    assert problems[1:] == [f"{p} line 3: index 0 appears more than once",
                            f"{p} line 4: index 'x' is not an integer (below 2^31)",
                            f"{p}: needs exactly one row whose class is 'novel', found 0"]


SPACE = LabelSpace(supers=(0, 2), subs=(5, 1, 7), sub_parent=(0, 0, 1), novel_super=3, novel_sub=9)


def test_encode_maps_file_indices_to_head_positions_and_the_rest_to_novel():
    sup, sub = SPACE.encode(torch.tensor([2, 0, 1, 3]), torch.tensor([7, 5, 1, 4]))
    assert sup.tolist() == [1, 0, NOVEL, NOVEL] and sub.tolist() == [2, 0, 1, NOVEL]
    assert sup.dtype == torch.int64


def test_decode_maps_head_positions_back_and_novel_to_the_novel_index_of_the_mapping():
    sup, sub = SPACE.decode(torch.tensor([1, 0, NOVEL]), torch.tensor([NOVEL, 2, 0]))
    assert sup.tolist() == [2, 0, 3] and sub.tolist() == [9, 7, 5]
    again = SPACE.decode(*SPACE.encode(torch.tensor([0, 2]), torch.tensor([1, 7])))
    assert [t.tolist() for t in again] == [[0, 2], [1, 7]]


def test_a_label_space_survives_json_as_a_checkpoint_stores_it():
    assert LabelSpace.from_dict(json.loads(json.dumps(SPACE.to_dict()))) == SPACE
