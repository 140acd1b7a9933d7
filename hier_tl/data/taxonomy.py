"""Class mappings, the superclass -> subclass taxonomy and what the two heads predict (`LabelSpace`).

The mapping files (`superclass_mapping.csv`, `subclass_mapping.csv`) have columns `index,class`; the
row whose class is `novel` gives that level's novel index. Nothing here assumes a class count.
`read_csv` is the one CSV reader for the dataset's files: every problem names the file and line.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

NOVEL_NAME = "novel"
NOVEL = -1  # head-space label meaning "novel at this level"
_INT = re.compile(r"-?[0-9]+")


def parse_int(raw: str) -> int | None:
    """A strict integer below 2^31 in absolute value, or None."""
    raw = raw.strip()
    return int(raw) if _INT.fullmatch(raw) and abs(int(raw)) < 2**31 else None


def read_csv(path: Path, required: tuple[str, ...], what: str, problems: list[str]) -> list[tuple[int, dict]] | None:
    """Rows of a UTF-8 CSV as (line number, {column: text}), blank lines skipped; headers compared in lower case.

    Problems (missing file, bad encoding, duplicate or missing columns, short or long rows) are appended to
    `problems` with file and line; returns None when the file cannot be used at all."""
    if not path.is_file():
        problems.append(f"{path}: {what} is {'a directory' if path.is_dir() else 'missing'}")
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{path}: cannot be parsed as a UTF-8 CSV ({str(e)[:200]})")
        return None
    except OSError as e:
        problems.append(f"{path}: cannot be read ({e.strerror or e})")
        return None
    if not rows:
        problems.append(f"{path}: empty file (expected header {','.join(required)})")
        return None
    line, header = rows[0][0], [h.strip().lower() for h in rows[0][1]]
    dup = sorted({h for h in header if header.count(h) > 1})
    missing = [c for c in required if c not in header]
    if dup:
        problems.append(f"{path} line {line}: column(s) {', '.join(dup)} appear more than once")
    elif missing:
        problems.append(f"{path} line {line}: missing required column(s) {', '.join(missing)} "
                        f"(header must contain {','.join(required)}; found {rows[0][1][:5]})")
    if dup or missing:
        return None
    out = []
    for n, r in rows[1:]:
        if len(r) > len(header):
            problems.append(f"{path} line {n}: more fields than header columns")
        elif len(r) < len(header):
            problems.append(f"{path} line {n}: too few fields (expected {','.join(header)}, got {r[:5]})")
        else:
            out.append((n, dict(zip(header, r))))
    return out


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy as the mapping file defines it."""

    names: dict[int, str]  # known (non-novel) index -> class name
    novel: int  # index that means "novel" at this level


@dataclass(frozen=True)
class Taxonomy:
    superclass: Level
    subclass: Level
    parent: dict[int, int] = field(default_factory=dict)  # subclass index -> superclass index (from training CSV)


def read_level(path: Path, problems: list[str]) -> Level | None:
    """Parse a mapping CSV, appending one message per problem (file and line) to `problems`."""
    rows = read_csv(path, ("index", "class"), "mapping file", problems)
    if rows is None:
        return None
    names: dict[int, str] = {}
    novel: list[int] = []
    before = len(problems)
    for line, rec in rows:
        raw, name = rec["index"].strip(), rec["class"].strip()
        idx = parse_int(raw)
        if idx is None:
            problems.append(f"{path} line {line}: index {raw[:40]!r} is not an integer (below 2^31)")
            continue
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


@dataclass(frozen=True)
class LabelSpace:
    """What the two heads predict: head position -> mapping-file index, plus the novel indices."""

    supers: tuple[int, ...]
    subs: tuple[int, ...]
    sub_parent: tuple[int, ...]  # subclass head position -> superclass head position
    novel_super: int
    novel_sub: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpace":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def encode(self, sup: torch.Tensor, sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mapping-file indices -> head positions (NOVEL where the class is not in the heads)."""
        return _lookup(self.supers, sup), _lookup(self.subs, sub)

    def decode(self, sup: torch.Tensor, sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head positions (NOVEL allowed) -> mapping-file indices with the novel indices."""
        s = torch.tensor(self.supers + (self.novel_super,))
        b = torch.tensor(self.subs + (self.novel_sub,))
        return s[torch.where(sup < 0, len(self.supers), sup)], b[torch.where(sub < 0, len(self.subs), sub)]


def _lookup(values: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    table = {v: i for i, v in enumerate(values)}
    return torch.tensor([table.get(int(v), NOVEL) for v in x], dtype=torch.int64)
