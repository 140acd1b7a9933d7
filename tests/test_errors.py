"""core.errors: every failure a user can act on is a HierTLError with its exit code and the lines the CLI prints."""

import pytest

from hier_tl.core import errors as E


@pytest.mark.parametrize("cls, code", [
    (E.HierTLError, 2), (E.ConfigError, 2), (E.DataError, 2), (E.CheckpointError, 2), (E.SweepError, 2),
    (E.StorageError, 2), (E.SelectionError, 2), (E.ScoreError, 2),
    (E.WeightsError, 1), (E.DivergedError, 1),  # the environment or the run, not the user's input
    (E.Interrupted, 130),  # what a shell reports for Ctrl-C
])
def test_each_error_kind_has_its_exit_code_and_is_a_hier_tl_error(cls, code):
    assert issubclass(cls, E.HierTLError) and cls.exit_code == code


def test_a_config_error_is_also_a_value_error():
    """Callers that validate with `except ValueError` (argparse types, plain Python checks) still catch it."""
    with pytest.raises(ValueError, match="lr: -1 is out of range"):
        raise E.ConfigError("lr: -1 is out of range")


@pytest.mark.parametrize("cls", [E.HierTLError, E.ConfigError, E.SweepError, E.Interrupted])
def test_a_plain_error_prints_as_one_line(cls):
    assert cls("results/x: no such folder; run hier-tl sweep first").lines() == \
        ["error: results/x: no such folder; run hier-tl sweep first"]


def test_data_problems_print_one_indented_line_each_under_a_count():
    e = E.DataError(["train_data.csv line 3: index 'x' is not an integer", "train_images/a.jpg: does not exist"])
    assert e.lines() == ["error: 2 problem(s) in the data:",
                         "  train_data.csv line 3: index 'x' is not an integer",
                         "  train_images/a.jpg: does not exist"]
    assert "line 3" in str(e) and "a.jpg" in str(e) and e.exit_code == 2


def test_a_long_list_of_data_problems_is_cut_at_fifty_with_the_rest_counted():
    problems = [f"train_data.csv line {n}: bad" for n in range(2, 2 + 53)]
    lines = E.DataError(problems).lines()
    assert lines[0] == "error: 53 problem(s) in the data:"
    assert lines[1:51] == [f"  {p}" for p in problems[:50]]
    assert lines[51:] == ["  ... and 3 more problems"]
    assert "... and 3 more problems" in str(E.DataError(problems))
    assert "more problems" not in "\n".join(E.DataError(problems[:50]).lines())  # exactly fifty: all shown
