"""core.yamlio: config and sweep files load bounded; a hostile or mistaken file is one line naming it."""

import time
from dataclasses import dataclass

import pytest

from hier_tl.core import yamlio
from hier_tl.core.errors import ConfigError

SWEEP = """\
name: search
base: &base {epochs: 10, lr: 0.001}
space:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
smoke:
  base: *base
novelty: {thresholds: &t [0.5, "tpr:0.95"], scores: [msp]}
also: *t
"""


def laughs(levels: int = 9) -> str:
    """The "billion laughs": each level an anchor listing the previous one nine times (9^9 values)."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, cur in zip("abcdefghijk", "bcdefghijk"[:levels - 1]):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def write(tmp_path, text: str | bytes, name: str = "s.yaml"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def refusal(path) -> str:
    with pytest.raises(ConfigError) as e:
        yamlio.read_yaml(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: ")
    return str(e.value)


def test_a_sweep_file_with_anchors_and_aliases_loads(tmp_path):
    d = yamlio.read_yaml(write(tmp_path, SWEEP))
    assert d["smoke"]["base"] == {"epochs": 10, "lr": 0.001} == d["base"]
    assert d["also"] == [0.5, "tpr:0.95"] and d["space"]["lr"] == {"loguniform": [1e-4, 1e-2]}


def test_a_merge_key_extends_an_anchored_mapping(tmp_path):
    d = yamlio.read_yaml(write(tmp_path, "base: &base {epochs: 10, lr: 0.001}\nsmoke:\n  base:\n"
                                         "    <<: *base\n    epochs: 1\n"))
    assert d["smoke"]["base"] == {"epochs": 1, "lr": 0.001}


def test_the_billion_laughs_is_refused_at_once(tmp_path):
    text = laughs()
    assert len(text.encode()) < 1024
    t0 = time.perf_counter()
    message = refusal(write(tmp_path, text))
    assert time.perf_counter() - t0 < 5.0  # unbounded, it would take hours and all memory
    assert "aliases (*name) expand to more than 100,000 values" in message


def test_the_billion_laughs_message_names_the_file_once(tmp_path):
    p = write(tmp_path, laughs())
    assert refusal(p) == f"{p}: its aliases (*name) expand to more than 100,000 values; write the values out, " \
        "or use fewer nested aliases"


def test_aliases_that_expand_to_fewer_values_than_the_bound_still_load(tmp_path):
    d = yamlio.read_yaml(write(tmp_path, laughs(levels=4)))  # 9^4 = 6,561 values
    assert len(d["d"]) == 9 and d["d"][8][8][8] == ["lol"] * 9


@pytest.mark.parametrize("text, line, first", [
    ("name: a\nlr: 0.1\nname: b\n", 3, 1),
    ("base:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n", 4, 2),
    ("space: {lr: {choice: [1]},\n        lr: {choice: [2]}}\n", 2, 1),
])
def test_a_duplicate_key_names_both_lines(tmp_path, text, line, first):
    message = refusal(write(tmp_path, text))
    assert f"line {line}: key " in message and f"appears twice in one mapping (first at line {first})" in message


def test_a_duplicate_key_on_one_line_is_refused(tmp_path):
    assert "appears twice" in refusal(write(tmp_path, "base: {lr: 0.1, lr: 0.2}\n"))


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    p = write(tmp_path, b"# padding\n" * (yamlio.MAX_BYTES // 10 + 1) + b"a: 1\n")
    assert p.stat().st_size > yamlio.MAX_BYTES
    assert refusal(p) == f"{p}: 1.0 MiB is too large for a config file (limit 1 MiB)"
    with pytest.raises(ConfigError, match=r"^--set: 1\.0 MiB is too large"):
        yamlio.loads("x" * (yamlio.MAX_BYTES + 1), "--set")


@pytest.mark.parametrize("text, needle", [
    ("- a\n- b\n", "expected a mapping at the top level, got list"),
    ("just text\n", "expected a mapping at the top level, got str"),
    ("3\n", "expected a mapping at the top level, got int"),
    ("a: [1, 2\nb: 3\n", "not valid YAML (while parsing a flow sequence"),
    ("a: !!python/object:os.system {}\n", "not valid YAML"),  # no Python objects from a config file
    ("a: 1\n---\nb: 2\n", "not valid YAML (expected a single document"),
    ("[" * 1000 + "]" * 1000, "nested too deeply"),
])
def test_what_is_not_a_plain_mapping_is_refused(tmp_path, text, needle):
    assert needle in refusal(write(tmp_path, text))


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    assert refusal(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"
    assert "cannot be read as text" in refusal(write(tmp_path, b"a: \xff\xfe\n"))


def test_an_empty_file_is_an_empty_mapping(tmp_path):
    assert yamlio.read_yaml(write(tmp_path, "")) == {} and yamlio.read_yaml(write(tmp_path, "# nothing\n")) == {}


def test_to_yaml_writes_a_dataclass_in_field_order_and_reads_back():
    @dataclass
    class C:
        name: str = "s"
        epochs: int = 3
        lr: float = 3e-4
    text = yamlio.to_yaml(C())
    assert text.splitlines()[0] == "name: s" and yamlio.loads(text) == {"name": "s", "epochs": 3, "lr": 3e-4}
    assert yamlio.to_yaml({"b": 1, "a": 2}) == "b: 1\na: 2\n"
