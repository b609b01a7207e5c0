"""The piecewise-linear scale axis: brackets, interpolation, pool parsing."""

from __future__ import annotations

import numpy as np
import pytest

from adascale.errors import AdaScaleError
from adascale.scales.axis import as_pool, bracket, interpolate

SCALES = np.array([0.0, 0.3, 1.0])


def test_anchors_reproduce_their_own_values(rng):
    values = rng.normal(size=(3, 7, 3))
    for k, s in enumerate(SCALES):
        np.testing.assert_array_equal(interpolate(values, SCALES, s), values[k])


def test_linear_between_the_bracketing_anchors_only(rng):
    values = rng.normal(size=(3, 7, 3))
    np.testing.assert_allclose(interpolate(values, SCALES, 0.15), 0.5 * (values[0] + values[1]))
    np.testing.assert_allclose(interpolate(values, SCALES, 0.65), 0.5 * (values[1] + values[2]))
    np.testing.assert_allclose(interpolate(values, SCALES, 0.3 + 0.7 * 0.25), 0.75 * values[1] + 0.25 * values[2])


def test_per_sample_scales_match_one_scale_at_a_time(rng):
    values = rng.normal(size=(3, 50, 3))
    s = rng.uniform(0, 1, 50)
    s[:3] = [0.0, 0.3, 1.0]
    mixed = interpolate(values, SCALES, s)
    for i in range(50):
        np.testing.assert_allclose(mixed[i], interpolate(values, SCALES, s[i])[i], atol=1e-15)


def test_bracket_edges():
    j, t = bracket(SCALES, np.array([0.0, 0.3, 1.0, 0.65]))
    np.testing.assert_array_equal(j, [0, 1, 1, 1])
    np.testing.assert_allclose(t, [0.0, 0.0, 1.0, 0.5])
    with pytest.raises(AdaScaleError):
        bracket(SCALES, 1.2)
    with pytest.raises(AdaScaleError):
        bracket(SCALES, np.array([0.5, np.nan]))


def test_as_pool_parses_sorts_and_rejects():
    np.testing.assert_array_equal(as_pool("1, 0,0.5,0.5"), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(as_pool([0.25]), [0.25])
    for bad in ("a,b", "0,1.5", "", [-0.1, 1.0]):
        with pytest.raises(AdaScaleError):
            as_pool(bad)
