"""core.version: every result records the package version and the exact commit (dirty or not) it ran from."""

import importlib.util
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import hier_tl
from hier_tl.core import version

SOURCE = Path(version.__file__)


def copy_of_version_module(root: Path):
    """version.py placed at ROOT/hier_tl/core/version.py and imported from there (its git root is ROOT)."""
    target = root / "hier_tl" / "core" / "version.py"
    target.parent.mkdir(parents=True)
    shutil.copy(SOURCE, target)
    spec = importlib.util.spec_from_file_location(f"version_copy_{abs(hash(root))}", target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_the_package_version_is_that_of_the_installed_distribution():
    try:
        want = metadata.version("hier-tl")
    except metadata.PackageNotFoundError:
        want = "0.0.0+src"
    assert hier_tl.__version__ == version.__version__ == want


def test_code_version_names_the_commit_of_this_checkout():
    got = version.code_version()
    assert set(got) == {"hier_tl_version", "git_commit"} and got["hier_tl_version"] == hier_tl.__version__
    if not (SOURCE.parents[2] / ".git").exists():
        pytest.skip("not running from a git checkout")
    head = git(SOURCE.parents[2], "rev-parse", "--short=12", "HEAD")
    assert re.fullmatch(re.escape(head) + r"(-dirty)?", got["git_commit"])


def test_the_commit_is_marked_dirty_by_changed_tracked_files_only(tmp_path):
    mod = copy_of_version_module(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "--short=12", "HEAD")
    (tmp_path / "untracked.txt").write_text("scratch")
    assert mod.git_commit() == head  # an untracked file does not change what runs
    mod.git_commit.cache_clear()
    (tmp_path / "hier_tl" / "core" / "version.py").write_text("# edited\n")
    assert mod.git_commit() == f"{head}-dirty"


def test_no_commit_outside_a_git_checkout_or_without_git(tmp_path, monkeypatch):
    mod = copy_of_version_module(tmp_path)
    if subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode == 0:
        pytest.skip(f"{tmp_path} lies inside a git checkout")
    assert mod.git_commit() == ""
    mod.git_commit.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git executable at all
    assert mod.git_commit() == ""
