"""The code version recorded with every result: the package version and the git commit it runs from."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("hier-tl")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"


@functools.cache
def git_commit() -> str:
    """The commit of the source tree hier-tl runs from ('' outside a git checkout); recorded with every result."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def code_version() -> dict[str, str]:
    return {"hier_tl_version": __version__, "git_commit": git_commit()}
