"""core.env: settings from environment variables are checked as strictly as a config file's keys."""

import pytest

from hier_tl.core.config import Range
from hier_tl.core.env import env_flag, env_number
from hier_tl.core.errors import ConfigError

VAR = "HIER_TL_TEST_SETTING"
RULE = Range(0, 60, lo_open=True)


@pytest.mark.parametrize("text, want", [
    (None, 5.0), ("", 5.0), ("   ", 5.0),  # unset or empty: the default
    ("30", 30.0), (" 2.5 ", 2.5), ("1e1", 10.0), ("60", 60.0),
])
def test_env_number_reads_the_value_or_the_default(monkeypatch, text, want):
    if text is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, text)
    assert env_number(VAR, 5.0, RULE) == want


@pytest.mark.parametrize("text, needle", [
    ("nan", "is not a finite number"), ("inf", "is not a finite number"), ("-Infinity", "is not a finite number"),
    ("ten", "is not a number"), ("5s", "is not a number"), ("0x10", "is not a number"),
    ("0", r"is out of range; must be in \(0, 60\]"), ("61", "is out of range"), ("-1", "is out of range"),
])
def test_env_number_refuses_bad_values_naming_the_variable(monkeypatch, text, needle):
    monkeypatch.setenv(VAR, text)
    with pytest.raises(ConfigError, match=f"^environment variable {VAR}.*{needle}") as e:
        env_number(VAR, 5.0, RULE)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, want", [
    (None, False), ("", False), ("0", False), ("false", False), ("No", False), (" off ", False),
    ("1", True), ("true", True), ("YES", True), ("on", True),
])
def test_env_flag(monkeypatch, text, want):
    if text is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, text)
    assert env_flag(VAR) is want


@pytest.mark.parametrize("text", ["2", "y", "enabled", "truee"])
def test_env_flag_refuses_anything_else_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(VAR, text)
    with pytest.raises(ConfigError, match=f"^environment variable {VAR}=.*: use 1 or 0$"):
        env_flag(VAR)
