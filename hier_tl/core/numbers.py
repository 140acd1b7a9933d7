"""Numbers as results tables hold them: numpy scalars, NaN for "no value", None, pandas' NA and NaT.
The one place that says what counts as a value."""

from __future__ import annotations

import math
import numbers
from typing import Any


def plain(v: Any) -> Any:
    """A value read back from Parquet / pandas / numpy as plain Python: scalars unwrapped; NaN, NA, NaT -> None."""
    if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        v = v.item()
    return None if missing(v) else v


def real_number(v: Any) -> float | None:
    """`v` as a float; None for None, NaN, bools and anything that is not a real number (infinities kept)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    f = float(v)
    return None if math.isnan(f) else f


def finite(v: Any) -> float | None:
    """`v` as a float if it is a finite real number (not a bool, str or None), else None."""
    f = real_number(v)
    return f if f is not None and math.isfinite(f) else None


def missing(v: Any) -> bool:
    """True for None, NaN, pandas' NA and NaT (but not for lists, arrays or strings)."""
    if v is None or type(v).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(v, (str, bytes)) or hasattr(v, "__len__"):
        return False
    try:
        return bool(v != v)
    except (TypeError, ValueError):
        return False
