"""analysis.report_pages: the report's header, its explanations, per-protocol fronts, and the page as a
browser shows it (headless Chromium: every image loads, nothing overflows 1400 px)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from hier_tl.analysis import report_pages
from hier_tl.results.reading import Results

ARTIFACTS = Path(os.environ.get("HIER_TL_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
PROBE = ("<script>window.addEventListener('load',()=>{const w=document.documentElement.clientWidth;"
         "const imgs=[...document.images];document.body.setAttribute('data-check',JSON.stringify({"
         "images:imgs.length,broken:imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.alt),"
         "page:document.documentElement.scrollWidth-w,over:[...document.querySelectorAll('body *')]"
         ".filter(e=>!e.closest('.scroll')&&e.getBoundingClientRect().right>w+1).map(e=>e.tagName)}))});</script>")


class _Storage:
    uri, name, is_local = "/r/x", "x", True


def test_the_header_says_what_was_run_where_and_how():
    meta = {"name": "x", "git_commit": "abc123", "hier_tl_version": "0.1.0", "provenance": {
        "command": "hier-tl sweep sweeps/openset.yaml", "started": "2026-11-29 10:00:00 UTC",
        "sweep_file": {"path": "sweeps/openset.yaml", "sha256": "f" * 64},
        "dataset": {"path": "/d/nndl64", "images": 5029, "sha256": "e" * 64}, "machine": {"cpu": "Xeon x 2"}}}
    rows = dict(report_pages.provenance_rows(Results(_Storage(), pd.DataFrame(), meta=meta), "hier-tl report x"))
    assert rows["sweep file"] == "sweeps/openset.yaml (sha256 ffffffffffff)"
    assert rows["dataset"] == "/d/nndl64: 5029 training images (sha256 eeeeeeeeeeee)"
    assert rows["code"] == "hier-tl 0.1.0, commit abc123" and rows["machine"] == "cpu Xeon x 2"
    assert rows["command"] == "hier-tl sweep sweeps/openset.yaml" and rows["report"].endswith(": hier-tl report x")
    old = dict(report_pages.provenance_rows(Results(_Storage(), pd.DataFrame(), meta={"data": "/d"})))
    assert old["dataset"].startswith("/d: ?") and old["command"] == "?"  # folders from before it was recorded


@pytest.mark.slow
def test_the_explanations_are_in_the_html_page_too(sweep, tmp_path):
    from hier_tl.analysis.report import write_report
    results, _ = sweep
    _, _, out = write_report(str(results), str(tmp_path))
    page = (out / "report.html").read_text()
    for term, _ in report_pages.HOW_TO_READ:
        assert f"<dt>{term}</dt>" in page and f"**{term}**" in (out / "report.md").read_text()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return found


def _chromium_args(tmp_path: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}"]


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser_at_1400_px(sweep, tmp_path):
    """Every image loads, nothing overflows the page (wide tables scroll in their own box); a screenshot is kept
    in test-artifacts/."""
    from hier_tl.analysis.report import write_report
    results, _ = sweep
    _, _, out = write_report(str(results), str(tmp_path / "report"))
    probed = tmp_path / "probed.html"
    probed.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(_chromium_args(tmp_path) + ["--window-size=1400,1000", "--virtual-time-budget=10000",
                                                      "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, "the page never finished loading in Chromium"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["images"] >= 5 and check["broken"] == []
    assert check["page"] <= 0 and check["over"] == [], check
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report_1400px.png"
    subprocess.run(_chromium_args(tmp_path) + ["--window-size=1400,2600", f"--screenshot={shot}",
                                               (out / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
