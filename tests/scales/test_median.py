"""Weighted medians minimise sums of weighted absolute deviations exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adascale.scales.median import grouped_weighted_median, weighted_median


def objective(t: float, x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * np.abs(t - x)))


def brute_minimum(x: np.ndarray, w: np.ndarray) -> float:
    """The minimum of a convex piecewise-linear function sits at one of its kinks."""
    return min(objective(t, x, w) for t in x)


points = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 1.0]) | st.floats(0, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(points)
def test_weighted_median_is_a_minimiser(data):
    x, w = (np.array(v, dtype=float) for v in data)
    t = weighted_median(x, w)
    assert objective(t, x, w) <= brute_minimum(x, w) + 1e-9 * (1 + w.sum())


@pytest.mark.parametrize("levels", [5, 1000, None])
def test_selection_path_on_large_inputs_matches_a_sort(rng, levels):
    # above the sort threshold the quickselect runs; few levels end on a pivot, many end in the sort
    x = rng.uniform(0, 1, 200_003)
    if levels is not None:
        x = np.round(x * (levels - 1)) / (levels - 1)
    w = rng.exponential(size=x.size) * (rng.uniform(size=x.size) > 0.2)
    order = np.argsort(x, kind="stable")
    cumulative = np.cumsum(w[order])
    expected = x[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    assert weighted_median(x, w) == expected


def test_zero_weight_returns_zero():
    assert weighted_median(np.array([0.3, 0.7]), np.zeros(2)) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_grouped_matches_each_group_alone(n_groups, seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, 60)
    x = np.round(rng.uniform(0, 1, 60), 2)
    w = rng.exponential(size=60) * (rng.uniform(size=60) > 0.3)
    medians = grouped_weighted_median(x, w, groups, n_groups)
    for g in range(n_groups):
        member = groups == g
        if w[member].sum() == 0:
            assert medians[g] == 0.0
        else:
            assert objective(medians[g], x[member], w[member]) <= brute_minimum(x[member], w[member]) + 1e-9
