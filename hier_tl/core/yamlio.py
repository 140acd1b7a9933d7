"""Reading and writing the YAML of configs and sweep files, bounded: a config file is small, and a few
hundred bytes must never make hier-tl allocate gigabytes.

Refused, each with one line naming the file (and the line): files over `MAX_BYTES`; documents that would
expand to more than `MAX_NODES` values once their aliases (`*name`) are expanded (the "billion laughs");
duplicate keys in a mapping (YAML lets the last one win silently); anything that is not a plain mapping
at the top.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped sweep file is 3 KiB
MAX_NODES = 100_000  # values after expanding aliases


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, naming their line."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}  # key -> the line it first appears on
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged keys may be overridden
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in first:
                    raise ConfigError(f"line {line}: key {key!r} appears twice in one mapping (first at line "
                                      f"{first[key]}); YAML would keep the last silently")
                first[key] = line
            except TypeError:  # an unhashable key: SafeLoader says so itself
                continue
        return super().construct_mapping(node, deep)


def _expanded_size(node, memo: dict) -> int:
    """How many values the node stands for once every alias is expanded (memoised: linear in the nodes)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a cycle (a recursive alias) counts once here; the total below still bounds it
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def loads(text: str, where: str = "YAML") -> Any:
    """One YAML document with the bounds above; ConfigError (naming `where` and the line) otherwise."""
    if len(text.encode(errors="replace")) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text.encode(errors='replace')) / 2**20:.1f} MiB is too large for a config "
                          f"file (limit {MAX_BYTES // 2**20} MiB)")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise ConfigError(f"its aliases (*name) expand to more than {MAX_NODES:,} values; write the values "
                              "out, or use fewer nested aliases")
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(e).split())[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path}: {size / 2**20:.1f} MiB is too large for a config file (limit "
                          f"{MAX_BYTES // 2**20} MiB)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as text ({e})") from None
    data = loads(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=False)
