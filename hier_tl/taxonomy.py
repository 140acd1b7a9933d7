"""Class mappings and the superclass -> subclass taxonomy.

The mapping files (`superclass_mapping.csv`, `subclass_mapping.csv`) have columns `index,class`; the
row whose class is `novel` gives that level's novel index. Nothing here assumes a class count.
"""

from __future__ import annotations

import csv
import re
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
        problems.append(f"{path}: mapping file is {'a directory' if path.is_dir() else 'missing'}")
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{path}: cannot be read as a UTF-8 CSV ({str(e)[:200]})")
        return None
    except OSError as e:
        problems.append(f"{path}: cannot be read ({e.strerror or e})")
        return None
    numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r)]  # skip blank lines
    if not numbered:
        problems.append(f"{path}: empty file (expected header 'index,class')")
        return None
    header = [h.strip().lower() for h in numbered[0][1]]
    if "index" not in header or "class" not in header:
        problems.append(f"{path} line {numbered[0][0]}: header must contain columns 'index' and 'class', "
                        f"found {numbered[0][1][:5]}")
        return None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        problems.append(f"{path} line 1: column(s) {', '.join(dup)} appear more than once")
        return None
    ii, ci = header.index("index"), header.index("class")
    names: dict[int, str] = {}
    novel: list[int] = []
    before = len(problems)
    for line, row in numbered[1:]:
        if len(row) <= max(ii, ci):
            problems.append(f"{path} line {line}: expected columns index,class, got {row}")
            continue
        raw, name = row[ii].strip(), row[ci].strip()
        if not re.fullmatch(r"-?[0-9]+", raw) or abs(int(raw)) >= 2**31:
            problems.append(f"{path} line {line}: index {raw[:40]!r} is not an integer (below 2^31)")
            continue
        idx = int(raw)
        if not name:
            problems.append(f"{path} line {line}: index {idx} has an empty class name")
        elif name.lower() != NOVEL_NAME and name in names.values():
            problems.append(f"{path} line {line}: class name {name[:80]!r} is used by two indices")
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
