"""core.numbers: what counts as a value when results tables hand back numpy scalars, NaN, None, NA and NaT."""

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from hier_tl.core.numbers import finite, missing, plain, real_number

INF = float("inf")


@pytest.mark.parametrize("v, want, kind", [
    (np.float64(0.25), 0.25, float), (np.float32(0.5), 0.5, float), (np.int64(3), 3, int), (np.bool_(True), True, bool),
    (np.str_("resnet18"), "resnet18", str), (np.array(2.5), 2.5, float),  # a 0-d array is a scalar too
    (float("nan"), None, type(None)), (np.float64("nan"), None, type(None)), (np.float32("nan"), None, type(None)),
    (None, None, type(None)), (1.5, 1.5, float), (7, 7, int), (False, False, bool), ("cnn", "cnn", str),
    (INF, INF, float), (np.float64(-INF), -INF, float),
])
def test_plain_unwraps_numpy_scalars_and_turns_nan_into_none(v, want, kind):
    got = plain(v)
    assert type(got) is kind and got == want


def test_plain_leaves_containers_as_they_are():
    xs = [1, float("nan")]
    assert plain(xs) is xs and plain({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("v", [pd.NA, pd.NaT])
def test_plain_turns_pandas_no_value_markers_into_none(v):
    assert plain(v) is None


@pytest.mark.parametrize("v, want", [
    (1, 1.0), (0.25, 0.25), (np.int64(3), 3.0), (np.float32(0.5), 0.5), (Fraction(1, 4), 0.25),
    (INF, INF), (-INF, -INF),  # infinities are kept: they are real numbers
    (float("nan"), None), (np.float64("nan"), None), (None, None), (pd.NA, None), (pd.NaT, None),
    (True, None), (np.bool_(False), None),  # a flag is not a measurement
    ("0.5", None), ("nan", None), ([1.0], None), (np.array([1.0]), None), (1 + 0j, None),
])
def test_real_number(v, want):
    got = real_number(v)
    assert got == want and (got is None or type(got) is float)


@pytest.mark.parametrize("v, want", [
    (0, 0.0), (np.float64(-2.5), -2.5), (np.int32(4), 4.0),
    (INF, None), (-INF, None), (np.float64(INF), None), (float("nan"), None),
    (None, None), (pd.NA, None), (True, None), ("1", None), ([0.5], None),
])
def test_finite(v, want):
    got = finite(v)
    assert got == want and (got is None or type(got) is float)


@pytest.mark.parametrize("v, want", [
    (None, True), (float("nan"), True), (np.float64("nan"), True), (np.float32("nan"), True), (pd.NA, True),
    (pd.NaT, True), (np.datetime64("NaT"), True),
    (0, False), (0.0, False), (False, False), (INF, False), (np.int64(0), False), ("", False), ("nan", False),
    (b"", False), ([], False), ([float("nan")], False), (np.array([math.nan]), False), ({}, False),
    (pd.Timestamp("2024-01-01"), False),
])
def test_missing(v, want):
    assert missing(v) is want
