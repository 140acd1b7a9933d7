"""analysis.unseen: each protocol's validation estimate beside figures measured on unseen images, the
difference in points, and the protocol that came closest."""

import math

import pandas as pd
import pytest

from hier_tl.analysis.unseen import closest, gaps, parse_unseen, verdict
from hier_tl.cli import main
from hier_tl.core.errors import ConfigError


def test_measurements_are_read_as_percentages():
    assert parse_unseen(["novel_super=86.6", "seen_super=91.4%", "new_breeds=0"]) == \
        {"novel super": pytest.approx(0.866), "seen super": pytest.approx(0.914), "new breeds": 0.0}


@pytest.mark.parametrize("item,needle", [
    ("novel_super", "expected NAME=PERCENT"),
    ("objective=80", "expected NAME=PERCENT with NAME one of seen_super"),
    ("novel_super=nan", "is not a percentage from 0 to 100"),
    ("novel_super=inf", "is not a percentage"),
    ("novel_super=-1", "is not a percentage"),
    ("novel_super=101", "is not a percentage"),
    ("novel_super=0.8x", "is not a percentage"),
])
def test_a_bad_measurement_is_one_line_naming_it(item, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        parse_unseen([item])
    assert item in str(e.value) and "\n" not in str(e.value)


# Two protocols, computed by hand: P1 (subclasses held out) estimates no novel superclass; P2 does.
TABLE = pd.DataFrame([
    {"P": "P1", "protocol": "3 subs held out", "seen super": 0.99, "novel super": None, "seen sub": 0.90},
    {"P": "P1", "protocol": "3 subs held out", "seen super": 0.50, "novel super": None, "seen sub": 0.10},
    {"P": "P2", "protocol": "3 subs + 1 super held out", "seen super": 0.95, "novel super": 0.97,
     "seen sub": 0.88},
])
UNSEEN = {"seen super": 0.914, "novel super": 0.866, "seen sub": 0.825}


def test_each_protocol_is_read_from_its_best_trial_in_points():
    g = gaps(TABLE, UNSEEN).set_index(["P", "figure"])["overstated by"]
    assert g["P1", "seen super"] == pytest.approx(7.6) and g["P1", "seen sub"] == pytest.approx(7.5)
    assert math.isnan(g["P1", "novel super"])  # not estimated by that protocol
    assert g["P2", "seen super"] == pytest.approx(3.6) and g["P2", "novel super"] == pytest.approx(10.4)
    assert g["P2", "seen sub"] == pytest.approx(5.5)


def test_the_closest_protocol_is_among_those_estimating_the_most_figures():
    g = gaps(TABLE, UNSEEN)
    p, mean, n = closest(g)
    # P1 is closer on what it estimates (7.55 points) but estimates 2 of 3 figures; P2 estimates all 3
    assert (p, n) == ("P2", 3) and mean == pytest.approx((3.6 + 10.4 + 5.5) / 3)
    assert "P2 (3 subs + 1 super held out), 6.5 points off" in verdict(g, "3 subs + 1 super held out")
    assert "consider `decide_on`" in verdict(g, "3 subs held out")
    assert "estimates any" in verdict(gaps(TABLE, {"new breeds": 0.5}), None)


@pytest.mark.slow
def test_the_report_shows_the_comparison_in_both_pages(sweep, tmp_path, capsys):
    results, _ = sweep
    args = ["report", str(results), "--out", str(tmp_path), "--unseen", "seen_super=90", "seen_sub=80"]
    assert main(args) == 0
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "## Validation vs images of unseen classes" in md and "| P1 |" in md and "points" in md
    assert "Closest to the unseen measurement: P1" in md
    assert "Validation vs images of unseen classes</h2>" in page and "Closest to the unseen measurement" in page
    assert main(["report", str(results), "--out", str(tmp_path), "--unseen", "seen_super=nan"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
