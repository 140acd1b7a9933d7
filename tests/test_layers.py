"""The package's layers, as hier_tl/__init__.py draws them: a module imports only lower layers.

Every import counts: at the top of a module, inside a function, and a module named in a string (the
registries import the modules they name on first use, `importlib.import_module("hier_tl....")`).
Only the sweep layer imports Ray. Every source module has its own test module, and none outgrows a screenful
of screens.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "hier_tl"
# rank of each top-level part of the package; parts of equal rank (analysis, predict) never import each other
LAYERS = {"core": 0, "data": 1, "train": 2, "results": 3, "sweep": 4, "analysis": 5, "predict": 5, "cli": 6,
          "": 7}  # "": the package root (hier_tl/__init__.py), the public entry points
MODULE_STRING = re.compile(r"hier_tl(\.\w+)+")
MAX_LINES = 350


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(name: str, source: str, is_package: bool = False) -> set[str]:
    """Every hier_tl module `source` (the module `name`) imports, anywhere in it, as absolute names."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names} if not node.module else {base}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value) \
                and _is_module(node.value):
            found.add(node.value)
    return {m for m in found if m == "hier_tl" or m.startswith("hier_tl.")}


def _is_module(name: str) -> bool:
    """Does the dotted name (from a string) name a module or package of hier_tl (not, say, a tag name)?"""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return part if part in LAYERS else ""  # hier_tl.<name that is not a layer> is an attribute of the root


def violations(name: str, source: str, is_package: bool = False) -> list[str]:
    """Imports of `name` that go up a layer, or sideways into a sibling of the same rank."""
    mine, out = layer(name), []
    for target in sorted(imported_modules(name, source, is_package)):
        theirs = layer(target)
        if theirs == mine:
            continue
        if LAYERS[theirs] >= LAYERS[mine]:
            out.append(f"{name} imports {target} ({theirs or 'package root'} is not below {mine})")
    return out


def source_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_imports_a_higher_layer():
    found = [v for p in source_modules() for v in violations(module_name(p), p.read_text(), p.name == "__init__.py")]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name, source", [
    ("hier_tl.train.trainer", "def f():\n    from ..results.reading import config_columns\n"),
    ("hier_tl.results.reading", "from .. import code_version\n"),
    ("hier_tl.results.storage", "from ..sweep.sweep_config import check_name\n"),
    ("hier_tl.sweep.journal", "def add():\n    from ..analysis.hpo import build_study\n"),
    ("hier_tl.core.registry", "BACKBONES = Registry('backbone', 'hier_tl.train.models')\n"),
    ("hier_tl.predict.predict", "import hier_tl.analysis.report\n"),
    ("hier_tl.data.dataset", "from hier_tl import load_results\n"),
])
def test_the_check_catches_upward_imports_of_every_kind(name, source):
    """Inside functions, relative, absolute, to the package root, sideways, and through a registry's string."""
    assert violations(name, source)


def test_the_check_lets_downward_and_same_layer_imports_through():
    assert not violations("hier_tl.sweep.runner", "from ..results import integrity\nfrom .space import SEARCHERS\n"
                          "from ..core.errors import SweepError\nimport hier_tl.train.trainer\n")


def test_only_the_sweep_layer_imports_ray():
    ray_users = []
    for p in source_modules():
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names) and layer(module_name(p)) != "sweep":
                ray_users.append(module_name(p))
    assert not ray_users


def test_validating_configs_imports_neither_ray_nor_the_trainer():
    code = ("import sys; from hier_tl.sweep.sweep_config import load_sweep; "
            f"load_sweep({str(ROOT / 'sweeps' / 'search.yaml')!r}).validate(); "
            "print(sorted(m for m in ('ray', 'hier_tl.train.trainer', 'hier_tl.results.storage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_source_module_has_a_test_module_of_its_own():
    names = [p.stem for p in source_modules() if p.name != "__init__.py"]
    assert len(names) == len(set(names)), "module names must be unique across the layers (tests/test_<name>.py)"
    missing = [n for n in names if not (ROOT / "tests" / f"test_{n}.py").is_file()]
    assert not missing, f"no tests/test_<module>.py for: {', '.join(missing)}"
    empty = [n for n in names if "\ndef test_" not in (ROOT / "tests" / f"test_{n}.py").read_text()]
    assert not empty, f"test modules without a test: {', '.join(empty)}"


def test_no_module_is_longer_than_a_few_screens():
    long = {module_name(p): n for p in source_modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_layer_says_what_it_owns_and_may_import():
    for part in (p for p in LAYERS if p and p != "cli"):
        doc = ast.get_docstring(ast.parse((PKG / part / "__init__.py").read_text())) or ""
        assert "Imports:" in doc, f"hier_tl/{part}/__init__.py: say what the layer may import"
