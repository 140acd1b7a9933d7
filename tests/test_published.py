"""results/published/: every published report was made by a shipped sweep file as it is now.

Each published folder keeps the sweep's stored definition (sweep.yaml, with its provenance: the sweep file's
path and sha256). A report whose sweep file has changed since is stale: this test says which, and how to
make it again.
"""

import hashlib
from pathlib import Path

import pytest
import yaml

from hier_tl.sweep.sweep_config import load_sweep

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = sorted(p for p in (ROOT / "results" / "published").iterdir() if p.is_dir())


def test_there_is_a_published_report():
    assert PUBLISHED


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_a_published_report_matches_the_shipped_sweep_file_it_names(folder):
    stored = yaml.safe_load((folder / "sweep.yaml").read_text())
    prov = stored["provenance"]
    shipped = ROOT / prov["sweep_file"]["path"]
    assert shipped.is_file(), f"{folder.name}: its sweep file {prov['sweep_file']['path']} is no longer shipped"
    load_sweep(shipped).validate()
    now = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert now == prov["sweep_file"]["sha256"], (
        f"{folder.relative_to(ROOT)} was made by {prov['sweep_file']['path']} as it was; the file has changed "
        f"since: run `{prov['command']}`, then `hier-tl report RESULTS --out {folder.relative_to(ROOT)}`")
    assert "nndl64" in prov["dataset"]["path"] and prov["dataset"]["images"] == 5029
    md = (folder / "report.md").read_text()
    for line in ("**sweep file**", "**dataset**", "**code**", "**machine**", "**command**"):
        assert line in md, f"{folder.name}: report.md lacks its header line {line}"
    for png in (p for p in folder.iterdir() if p.suffix == ".png"):
        assert f"({png.name})" in md, f"{png.name} is not in report.md: a leftover of an older report"
