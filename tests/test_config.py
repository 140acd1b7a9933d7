"""core.config: dataclasses built from YAML mappings strictly (errors name the key path), the rules declared
beside each field, `--set` overrides and the novelty-threshold grammar. (TrainConfig: test_train_config.py.)"""

import math
from dataclasses import dataclass, field
from typing import Annotated

import pytest

from hier_tl.core.config import (
    Check,
    Named,
    OneOf,
    Range,
    Threshold,
    apply_overrides,
    check_fields,
    from_dict,
    marked,
    parse_value,
)
from hier_tl.core.errors import ConfigError
from hier_tl.core.registry import Registry

PARTS = Registry("part")
PARTS.register("wheel", round=True)(object)
PARTS.register("brick", round=False)(object)


def _even(v, key):
    if v % 2:
        raise ConfigError(f"{key}: {v} is odd")


@dataclass
class Inner:
    size: Annotated[int, Range(1, 8)] = 2
    shape: Annotated[str, OneOf(("square", "round"))] = "square"


@dataclass
class Outer:
    lr: Annotated[float, Range(0, 10, lo_open=True)] = 0.1
    count: Annotated[int, Check(_even), "protocol"] = 4
    part: Annotated[str, Named(PARTS, (("round", True, "does not roll"),), allow=("none",)), "protocol"] = "wheel"
    flag: bool = False
    limit: int | None = None
    rule: float | str = 0.5
    tags: list = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    calls: list = field(default_factory=list, repr=False, compare=False)  # validate() notes each call here

    def validate(self):
        self.calls.append("validate")
        if self.flag and self.limit is None:
            raise ConfigError("limit: needed when flag is set")


def test_from_dict_builds_nested_configs_widening_numbers_yaml_reads_as_text():
    c = from_dict(Outer, {"lr": "3e-4", "count": 6, "inner": {"size": 8}, "limit": None, "rule": "tpr:0.9",
                          "tags": ["a"]})
    assert (c.lr, c.count, c.inner, c.limit, c.rule, c.tags) == (3e-4, 6, Inner(8, "square"), None, "tpr:0.9", ["a"])
    assert type(from_dict(Outer, {"lr": 1}).lr) is float  # an int where a float is wanted widens
    assert from_dict(Outer, {"rule": "0.7"}).rule == "0.7"  # float | str: text stays text
    assert from_dict(Outer, None) == Outer() and from_dict(Outer, None).calls == ["validate"]


@pytest.mark.parametrize("data, message", [
    ({"lerning_rate": 1, "zz": 2}, "unknown key(s) lerning_rate, zz; valid keys: calls, count, flag, inner, limit, "
                                   "lr, part, rule, tags"),
    ({"inner": {"sise": 3}}, "unknown key(s) inner.sise; valid keys: shape, size"),
    ({"count": "ten"}, "count: expected int, got 'ten'"),
    ({"count": True}, "count: expected int, got True"),  # a bool is not a number
    ({"count": 2.0}, "count: expected int, got 2.0"),
    ({"flag": 1}, "flag: expected bool, got 1"),
    ({"lr": "fast"}, "lr: expected float, got 'fast'"),
    ({"limit": "x"}, "limit: expected int | None, got 'x'"),
    ({"inner": [1]}, "inner: expected Inner, got [1]"),
    ({"tags": "a"}, "tags: expected list, got 'a'"),
    ({"lr": 0}, "lr: 0.0 is out of range; must be in (0, 10]"),
    ({"lr": float("nan")}, "lr: nan is not a finite number"),
    ({"lr": "1e999"}, "lr: inf is not a finite number"),
    ({"inner": {"size": 9}}, "inner.size: 9 is out of range; must be in [1, 8]"),
    ({"inner": {"shape": "oval"}}, "inner.shape: 'oval' is not one of square, round"),
    ({"count": 3}, "count: 3 is odd"),
    ({"part": "gear"}, "part: unknown part 'gear'; known: brick, wheel"),
    ({"part": "brick"}, "part: 'brick' does not roll"),
    ({"flag": True}, "limit: needed when flag is set"),  # validate() runs last
])
def test_from_dict_refuses_with_one_line_naming_the_key_path(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    assert str(e.value) == message


def test_from_dict_refuses_a_top_level_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^Outer: expected a mapping, got list$"):
        from_dict(Outer, [1, 2])
    with pytest.raises(ConfigError, match=r"^base\.: expected a mapping, got str$"):
        from_dict(Outer, "x", "base.")


def test_named_accepts_extra_values_and_entries_with_the_required_meta():
    assert from_dict(Outer, {"part": "none"}).part == "none" and from_dict(Outer, {"part": "wheel"}).part == "wheel"


def test_check_fields_checks_an_object_built_without_from_dict():
    check_fields(Outer())
    with pytest.raises(ConfigError, match=r"^base\.lr: -1\.0 is out of range; must be in \(0, 10\]$"):
        check_fields(Outer(lr=-1.0), "base.")
    with pytest.raises(ConfigError, match=r"^base\.lr: inf is not a finite number$"):
        check_fields(Outer(lr=math.inf), "base.")


def test_marked_lists_the_fields_carrying_a_marker_in_order():
    assert marked(Outer, "protocol") == ("count", "part") and marked(Inner, "protocol") == ()


@pytest.mark.parametrize("rule, text, inside, outside", [
    (Range(0, 1), "in [0, 1]", [0, 0.5, 1], [-0.1, 1.01]),
    (Range(0, 1, hi_open=True), "in [0, 1)", [0, 0.999], [1]),
    (Range(0, 10, lo_open=True), "in (0, 10]", [1e-9, 10], [0, -1]),
    (Range(0, lo_open=True), "> 0", [1e-9, 1e9], [0]),
    (Range(1), ">= 1", [1, 2], [0]),
    (Range(hi=5), "<= 5", [-1e9, 5], [5.5]),
    (Range(hi=5, hi_open=True), "< 5", [4.99], [5]),
])
def test_range_bounds_and_how_they_read(rule, text, inside, outside):
    assert str(rule) == text
    for v in inside:
        rule.check("k", v)
    for v in outside:
        with pytest.raises(ConfigError) as e:
            rule.check("k", v)
        assert str(e.value) == f"k: {v!r} is out of range; must be {text}"


@pytest.mark.parametrize("spec, kind, value", [
    (0.5, "value", 0.5), (1, "value", 1.0), (-2, "value", -2.0), ("0.7", "value", 0.7), (" .5 ", "value", 0.5),
    ("best", "best", None), (" best ", "best", None), ("tpr:0.95", "tpr", 0.95), ("tpr:1", "tpr", 1.0),
    ("tpr: 0.9", "tpr", 0.9),
])
def test_threshold_grammar(spec, kind, value):
    t = Threshold.parse(spec)
    assert t.kind == kind and (math.isnan(t.value) if value is None else t.value == value)
    assert Threshold.parse(str(t)) == t and Threshold.parse(t) is t  # its text parses back to itself


@pytest.mark.parametrize("spec", ["tpr:0", "tpr:1.5", "tpr:-0.1", "tpr:", "tpr:x", "high", "", "Best", "nan", "inf",
                                  "1e400", True, None, math.nan, math.inf, [0.5]])
def test_threshold_refuses_anything_else_naming_the_key(spec):
    with pytest.raises(ConfigError, match=r"^base\.threshold: .* is not a number, 'best' or 'tpr:P'"):
        Threshold.parse(spec, "base.threshold")


@pytest.mark.parametrize("t, text", [(Threshold("value", 0.5), "0.5"), (Threshold("value", 2.0), "2"),
                                     (Threshold("tpr", 0.985), "tpr:0.985"), (Threshold("best"), "best")])
def test_threshold_reads_back_as_written(t, text):
    assert str(t) == text


def test_thresholds_per_level():
    assert Threshold.per_level("tpr:0.985/tpr:0.97") == {"super": Threshold("tpr", 0.985),
                                                         "sub": Threshold("tpr", 0.97)}
    assert Threshold.per_level("best/0.4") == {"super": Threshold("best"), "sub": Threshold("value", 0.4)}
    assert Threshold.per_level(0.6) == {"super": Threshold("value", 0.6), "sub": Threshold("value", 0.6)}


@pytest.mark.parametrize("spec, message", [
    ("a/b/c", "threshold: 'a/b/c' has 3 parts; per-level thresholds are SUPER/SUB"),
    ("tpr:2/best", "threshold 'tpr:2/best', superclass: 'tpr:2' is not a number"),
    ("best/high", "threshold 'best/high', subclass: 'high' is not a number"),
])
def test_a_bad_per_level_threshold_names_the_rule_and_the_level(spec, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        Threshold.per_level(spec)


@pytest.mark.parametrize("text, want", [
    ("0.1", 0.1), ("3e-4", 3e-4), ("1.0e-3", 1e-3), ("3", 3), ("-2", -2), ("+5", 5), (" 7 ", 7),
    ("true", True), ("false", False), ("resnet18", "resnet18"), ("tpr:0.95", "tpr:0.95"), ("null", None),
    ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}), ("a: b: c", "a: b: c"),  # not YAML: the text itself
])
def test_parse_value_reads_a_set_value_as_yaml_with_numbers_as_numbers(text, want):
    got = parse_value(text)
    assert got == want and type(got) is type(want)


def test_apply_overrides_reaches_into_nested_mappings_without_changing_the_input():
    data = {"base": {"epochs": 9, "lr": 0.1}, "name": "a"}
    out = apply_overrides(data, ["base.epochs=2", "resources.gpu=0.5", "name=b=c", " base.hflip =false"])
    assert out == {"base": {"epochs": 2, "lr": 0.1, "hflip": False}, "name": "b=c", "resources": {"gpu": 0.5}}
    assert data == {"base": {"epochs": 9, "lr": 0.1}, "name": "a"}
    assert apply_overrides(data, None) == data and apply_overrides(data, None) is not data


@pytest.mark.parametrize("item, message", [
    ("lr", "--set 'lr': expected key=value"),
    ("base.epochs.x=1", "--set base.epochs.x: epochs is not a mapping"),
])
def test_a_bad_override_is_one_line_naming_it(item, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides({"base": {"epochs": 3}}, [item])
    assert str(e.value) == message
