"""Settings read from environment variables, checked as strictly as a config file's keys."""

from __future__ import annotations

import math
import os

from .config import Range
from .errors import ConfigError


def env_number(name: str, default: float, rule: Range) -> float:
    """The number in environment variable `name` (`default` when unset or empty); NaN, infinities, text and
    values outside `rule` are a ConfigError naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"environment variable {name}={text!r} is not a finite number")
    rule.check(f"environment variable {name}", value)
    return value


def env_flag(name: str) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off (unset: no); anything else is refused."""
    text = os.environ.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"environment variable {name}={text!r}: use 1 or 0")
