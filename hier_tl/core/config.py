"""Typed configuration machinery: dataclasses built from YAML mappings, strict about unknown keys and types
(errors name the key path), `--set key=value` overrides, and the novelty-threshold grammar (`Threshold`).
The configs themselves live with what they configure (`train.train_config`, `sweep.sweep_config`)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Callable

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Threshold:
    """The threshold grammar, parsed once: a number, `tpr:P` (keep a fraction P of the seen validation
    images as seen, 0 < P <= 1) or `best` (maximise the mean of seen and novel accuracy)."""

    kind: str  # value | tpr | best
    value: float = math.nan

    @classmethod
    def parse(cls, spec: Any, key: str = "threshold") -> "Threshold":
        if isinstance(spec, Threshold):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool) and math.isfinite(spec):
            return cls("value", float(spec))
        text = spec.strip() if isinstance(spec, str) else None
        if text == "best":
            return cls("best")
        if text and text.startswith("tpr:") and _FLOAT.fullmatch(text[4:].strip()) and 0 < float(text[4:]) <= 1:
            return cls("tpr", float(text[4:]))
        if text and _FLOAT.fullmatch(text) and math.isfinite(float(text)):
            return cls("value", float(text))
        raise ConfigError(f"{key}: {spec!r} is not a number, 'best' or 'tpr:P' (0 < P <= 1), or SUPER/SUB of those")

    def __str__(self) -> str:
        return {"value": lambda: f"{self.value:g}", "tpr": lambda: f"tpr:{self.value:g}",
                "best": lambda: "best"}[self.kind]()

    @classmethod
    def per_level(cls, spec: Any, key: str = "threshold") -> dict[str, "Threshold"]:
        """The rule of each level: one rule for both, or `SUPER/SUB`, the superclass level's rule then the
        subclass level's (`tpr:0.985/tpr:0.97`: keep 98.5% of seen superclasses, 97% of seen subclasses)."""
        if isinstance(spec, str) and "/" in spec:
            parts = spec.split("/")
            if len(parts) != 2:
                raise ConfigError(f"{key}: {spec!r} has {len(parts)} parts; per-level thresholds are SUPER/SUB")
            where = f"{key} {spec!r}"
            return {"super": cls.parse(parts[0], f"{where}, superclass"), "sub": cls.parse(parts[1], f"{where}, subclass")}
        rule = cls.parse(spec, key)
        return {"super": rule, "sub": rule}


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# --- what a field may hold, declared beside it: `lr: Annotated[float, Range(0, 10, lo_open=True)] = 1e-3` ---
@dataclass(frozen=True)
class Range:
    """A number between `lo` and `hi` (None: unbounded); NaN and infinities are refused everywhere anyway."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False

    def check(self, key: str, v: Any) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (
                (self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)) and
                (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))):
            raise ConfigError(f"{key}: {v!r} is out of range; must be {self}")

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    choices: tuple

    def check(self, key: str, v: Any) -> None:
        if v not in self.choices:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(str, self.choices))}")


@dataclass(frozen=True)
class Named:
    """A name in a registry (`registry.get` says which names exist); `meta` entries the entry must carry."""

    registry: Any
    meta: tuple = ()  # (key, value, why) triples
    allow: tuple = ()  # values accepted besides the registry's names

    def check(self, key: str, v: Any) -> None:
        if v in self.allow:
            return
        self.registry.get(v, where=key)
        for m, want, why in self.meta:
            if self.registry.meta(v).get(m) != want:
                raise ConfigError(f"{key}: {v!r} {why}")


@dataclass(frozen=True)
class Check:
    """Any rule: `fn(value, key)` raises ConfigError naming `key`."""

    fn: Callable[[Any, str], Any]

    def check(self, key: str, v: Any) -> None:
        self.fn(v, key)


@functools.cache
def field_rules(cls) -> dict[str, tuple]:
    """Field name -> the `Annotated` metadata declared beside it (constraints and markers)."""
    return {k: getattr(h, "__metadata__", ()) for k, h in typing.get_type_hints(cls, include_extras=True).items()}


@functools.cache
def _hints(cls) -> dict[str, Any]:
    """The dataclass's field types (computed once per class: `typing.get_type_hints` is slow)."""
    return typing.get_type_hints(cls)


def marked(cls, marker: str) -> tuple[str, ...]:
    """The fields of `cls` carrying `marker` in their `Annotated` metadata (e.g. "protocol")."""
    return tuple(k for k, rules in field_rules(cls).items() if marker in rules)


def check_fields(obj, where: str = "") -> None:
    """Every field of dataclass `obj` against the rules declared beside it; non-finite numbers are refused."""
    for key, rules in field_rules(type(obj)).items():
        v = getattr(obj, key)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}{key}: {v!r} is not a finite number")
        for rule in rules:
            if hasattr(rule, "check"):
                rule.check(where + key, v)


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Does `value` fit `hint`? Returns (ok, value) with ints widened to float where a float is wanted."""
    hint = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return True, value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if t is float and str not in options and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return True, float(value)  # YAML 1.1 reads `3e-4` as text
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if t in (str, bool) and isinstance(value, t):
            return True, value
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            return True, value
        if (typing.get_origin(t) or t) in (dict, list) and isinstance(value, typing.get_origin(t) or t):
            return True, value
        if t is Any:
            return True, value
    return False, value


def from_dict(cls, data: dict[str, Any] | None, where: str = ""):
    """Build dataclass `cls` from a dict, refusing unknown keys, wrong types, non-finite numbers and values
    outside the rules declared beside each field (naming the key path), then running `cls.validate()`."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        ok, value = _type_ok(value, hint)
        if not ok:
            raise ConfigError(f"{where}{key}: expected {_hint_name(hint)}, got {value!r}")
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}{key}.")
        kwargs[key] = value
    obj = cls(**kwargs)
    check_fields(obj, where)
    check = getattr(obj, "validate", None)
    if check:
        check()
    return obj


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_value(text: str) -> Any:
    """A `--set` value as YAML: `0.1` and `3e-4` -> float, `true` -> bool, `resnet18` -> str."""
    if _FLOAT.fullmatch(text.strip()):
        return int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `key=value` (dotted keys reach into nested mappings) to a plain dict, returning a new dict."""
    out = _deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        node = out
        *parents, last = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a mapping")
        node[last] = parse_value(text)
    return out


def _deepcopy(d):
    return {k: _deepcopy(v) for k, v in d.items()} if isinstance(d, dict) else d
