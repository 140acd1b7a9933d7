"""Class mappings and the superclass -> subclass taxonomy.

The mapping files (`superclass_mapping.csv`, `subclass_mapping.csv`) have columns `index,class`; the
row whose class is `novel` gives that level's novel index. Nothing here assumes a class count.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

NOVEL_NAME = "novel"


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy as the mapping file defines it."""

    names: dict[int, str]  # known (non-novel) index -> class name
    novel: int  # index that means "novel" at this level

    @property
    def known(self) -> list[int]:
        return sorted(self.names)


@dataclass(frozen=True)
class Taxonomy:
    superclass: Level
    subclass: Level
    parent: dict[int, int] = field(default_factory=dict)  # subclass index -> superclass index (from training CSV)

    def children(self, super_index: int) -> list[int]:
        return sorted(s for s, p in self.parent.items() if p == super_index)


def read_level(path: Path, problems: list[str]) -> Level | None:
    """Parse a mapping CSV, appending one message per problem (file and line) to `problems`."""
    if not path.is_file():
        problems.append(f"{path}: mapping file is missing")
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{path}: cannot be read as a UTF-8 CSV ({e})")
        return None
    if not rows:
        problems.append(f"{path}: empty file (expected header 'index,class')")
        return None
    header = [h.strip().lower() for h in rows[0]]
    if "index" not in header or "class" not in header:
        problems.append(f"{path} line 1: header must contain columns 'index' and 'class', found {rows[0]}")
        return None
    ii, ci = header.index("index"), header.index("class")
    names: dict[int, str] = {}
    novel: list[int] = []
    before = len(problems)
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ii, ci):
            problems.append(f"{path} line {line}: expected columns index,class, got {row}")
            continue
        raw, name = row[ii].strip(), row[ci].strip()
        try:
            idx = int(raw)
        except ValueError:
            problems.append(f"{path} line {line}: index {raw!r} is not an integer")
            continue
        if idx < 0:
            problems.append(f"{path} line {line}: index {idx} is negative")
        elif idx in names or idx in novel:
            problems.append(f"{path} line {line}: index {idx} appears more than once")
        elif name.lower() == NOVEL_NAME:
            novel.append(idx)
        else:
            names[idx] = name
    if len(novel) != 1:
        problems.append(f"{path}: needs exactly one row whose class is 'novel', found {len(novel)}")
    if not names:
        problems.append(f"{path}: no known (non-novel) classes")
    if len(problems) > before:
        return None
    return Level(names=names, novel=novel[0])
