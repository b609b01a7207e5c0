"""Oracles against brute force: the exact continuous oracle and best global scale equal a
dense search, pool oracles equal explicit minima, per sample and per frame."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adascale.scales.oracles import (
    ScaleLosses,
    anchor_errors,
    best_global_scale,
    route_continuous,
    route_pool,
    scale_loss,
)
from adascale.scales.synthetic import synthetic_predictions

GRID_PER_UNIT = 4001


def random_case(seed: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Errors (K, N, 3) with the degenerate cases mixed in: identical anchors, exact zeros."""
    rng = np.random.default_rng(seed)
    inner = np.sort(rng.choice(np.arange(1, 20), size=k - 2, replace=False) / 20.0)
    scales = np.concatenate([[0.0], inner, [1.0]])
    errors = rng.normal(size=(k, n, 3)) * rng.choice([0.1, 1.0, 10.0], size=(1, n, 1))
    if n > 1:
        errors[1, 0] = errors[0, 0]  # one sample whose first two anchors agree (d = 0)
    errors[rng.uniform(size=errors.shape) < 0.05] = 0.0
    return errors, scales


def grid(scales: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([np.linspace(0, 1, GRID_PER_UNIT), scales]))


def dense_losses(errors: np.ndarray, scales: np.ndarray, s_grid: np.ndarray) -> np.ndarray:
    """(G, N) l_i(s) on every grid point, straight from the definition F(s) = (1-t) F_j + t F_j+1."""
    j = np.clip(np.searchsorted(scales, s_grid, side="right") - 1, 0, len(scales) - 2)
    t = ((s_grid - scales[j]) / (scales[j + 1] - scales[j]))[:, None, None]
    return np.abs((1 - t) * errors[j] + t * errors[j + 1]).mean(axis=-1)


def slope_bound(errors: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(N,) Lipschitz constant of l_i(s): mean_c |d_c| / interval width, worst interval."""
    d = np.abs(np.diff(errors, axis=0)).mean(axis=-1)  # (K-1, N)
    return (d / np.diff(scales)[:, None]).max(axis=0)


cases = st.tuples(st.integers(0, 2**32 - 1), st.integers(2, 4), st.integers(1, 25))


@settings(max_examples=60, deadline=None)
@given(cases)
def test_continuous_oracle_equals_dense_search(case):
    errors, scales = random_case(*case)
    s_grid = grid(scales)
    dense = dense_losses(errors, scales, s_grid)  # (G, N)
    routing = route_continuous(errors, scales)
    spacing = np.diff(s_grid).max()
    assert ((routing.s >= 0) & (routing.s <= 1)).all()
    np.testing.assert_allclose(routing.loss, scale_loss(errors, scales, routing.s), rtol=1e-12, atol=1e-12)
    assert (routing.loss <= dense.min(axis=0) + 1e-12).all()
    assert (dense.min(axis=0) - routing.loss <= slope_bound(errors, scales) * spacing + 1e-12).all()


@settings(max_examples=40, deadline=None)
@given(cases, st.integers(1, 5))
def test_frame_continuous_oracle_equals_dense_search(case, n_frames):
    errors, scales = random_case(*case)
    groups = np.random.default_rng(case[0]).integers(0, n_frames, errors.shape[1])
    groups = np.unique(groups, return_inverse=True)[1]
    s_grid = grid(scales)
    dense = np.stack([np.bincount(groups, row) for row in dense_losses(errors, scales, s_grid)])  # (G, frames)
    routing = route_continuous(errors, scales, groups)
    per_frame = np.bincount(groups, routing.loss)
    bound = np.bincount(groups, slope_bound(errors, scales)) * np.diff(s_grid).max()
    for g in range(per_frame.size):
        assert np.unique(routing.s[groups == g]).size == 1  # one scale per frame
    assert (per_frame <= dense.min(axis=0) + 1e-10).all()
    assert (dense.min(axis=0) - per_frame <= bound + 1e-10).all()


@settings(max_examples=60, deadline=None)
@given(cases)
def test_best_global_scale_equals_dense_search(case):
    errors, scales = random_case(*case)
    s_grid = grid(scales)
    dense = dense_losses(errors, scales, s_grid).mean(axis=1)
    s, mae = best_global_scale(errors, scales)
    assert mae == scale_loss(errors, scales, s).mean()
    assert mae <= dense.min() + 1e-12
    assert dense.min() - mae <= slope_bound(errors, scales).mean() * np.diff(s_grid).max() + 1e-12


def test_best_global_scale_finds_a_known_interior_optimum():
    # every sample is best at s = 0.3 exactly: the MAE is zero there and only there
    rng = np.random.default_rng(3)
    f0, f1 = rng.normal(size=(2, 500, 3))
    ref = 0.7 * f0 + 0.3 * f1
    s, mae = best_global_scale(np.stack([f0 - ref, f1 - ref]), np.array([0.0, 1.0]))
    assert abs(s - 0.3) < 1e-12 and mae < 1e-12


pools = st.lists(st.floats(0, 1), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(cases, pools, st.floats(0, 1), st.booleans())
def test_pool_oracle_is_the_explicit_minimum_and_more_scales_never_hurt(case, pool, extra, per_frame):
    errors, scales = random_case(*case)
    groups = np.arange(errors.shape[1]) // 3 if per_frame else None
    losses = ScaleLosses(errors, scales, groups)
    pool = np.unique(pool)
    routing = route_pool(losses, pool)
    columns = np.stack([scale_loss(errors, scales, p) for p in pool], axis=1)  # (N, P)
    if groups is None:
        np.testing.assert_allclose(routing.loss, columns.min(axis=1), rtol=1e-12)
    else:
        frame_sums = np.stack([np.bincount(groups, c) for c in columns.T], axis=1)
        np.testing.assert_allclose(np.bincount(groups, routing.loss), frame_sums.min(axis=1), rtol=1e-12)
    np.testing.assert_allclose(routing.loss, scale_loss(errors, scales, routing.s), rtol=1e-12)
    assert np.isclose(losses.pool_loss(pool), routing.loss.mean(), rtol=1e-12)
    assert losses.pool_loss(np.append(pool, extra)) <= losses.pool_loss(pool)


def test_hard_oracle_picks_the_best_anchor_and_the_ordering_holds():
    ps = synthetic_predictions(n_frames=20, atoms_per_frame=30, n_anchors=3, seed=4)
    errors = anchor_errors(ps)
    losses = ScaleLosses(errors, ps.scales)
    hard = route_pool(losses, ps.scales)
    anchor_loss = np.abs(errors).mean(axis=-1)
    np.testing.assert_allclose(hard.loss, anchor_loss.min(axis=0))
    np.testing.assert_array_equal(hard.s, ps.scales[anchor_loss.argmin(axis=0)])
    continuous = route_continuous(errors, ps.scales)
    pool = route_pool(losses, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert (continuous.loss <= pool.loss + 1e-12).all() and (pool.loss <= hard.loss + 1e-12).all()
    assert hard.loss.mean() < anchor_loss.mean(axis=1).min()


def test_exact_ties_go_to_the_lower_scale():
    """DESIGN: ties keep the lower scale. Each case is an exact tie in floating point."""
    scales = np.array([0.0, 1.0])
    # hard oracle: anchor errors of equal |.| component by component, so l(0) == l(1) exactly
    e0 = np.array([[1.0, -2.0, 0.5]])
    hard = route_pool(ScaleLosses(np.stack([e0, -e0]), scales), scales)
    assert hard.s.tolist() == [0.0]
    # pool oracle: E(s) = (3, 3, 3) - 4 s (1, 1, 1), so l(0.5) == l(1) == 1 exactly and l(0) == 3
    errors = np.stack([np.full((1, 3), 3.0), np.full((1, 3), -1.0)])
    pool = route_pool(ScaleLosses(errors, scales), [0.0, 0.5, 1.0])
    assert pool.s.tolist() == [0.5] and pool.loss.tolist() == [1.0]
    # three anchors, the tie between the upper two
    three = ScaleLosses(np.stack([np.full((1, 3), 5.0), e0, -e0]), np.array([0.0, 0.5, 1.0]))
    assert route_pool(three, three.scales).s.tolist() == [0.5]
    # continuous oracle: l(t) = (|t - 0.75| + |t - 0.25| + 0.5) / 3 is flat on [0.25, 0.75];
    # the higher kink comes first (x component), so "first candidate wins" is not enough
    flat = np.stack([np.array([[-0.75, 0.25, 0.5]]), np.array([[0.25, -0.75, 0.5]])])
    continuous = route_continuous(flat, scales)
    assert continuous.s.tolist() == [0.25] and continuous.loss.tolist() == [1.0 / 3.0]
    per_frame = route_continuous(np.repeat(flat, 2, axis=1), scales, np.array([0, 0]))
    assert per_frame.s.tolist() == [0.25, 0.25]
    assert best_global_scale(flat, scales) == (0.25, 1.0 / 3.0)


def test_continuous_ties_across_an_interior_anchor_go_to_the_lower_scale():
    """Three anchors at 0, 0.5, 1, so the tied minima lie in different intervals and the
    order in which intervals are tried decides, per sample and per frame. Exact ties in
    floating point: every loss below sums the same three numbers."""
    scales = np.array([0.0, 0.5, 1.0])
    # two separate minima: l(0) == l(1) == 1 and l > 1 in between (E(0.5) = (3, 3, 3), E(1) = E(0))
    ends = np.stack([np.ones((1, 3)), np.full((1, 3), 3.0), np.ones((1, 3))])
    # a flat minimum across the interior anchor: E_x = s - 0.75, E_y = 0.25 - s, E_z = 0.5,
    # so l(s) = 1/3 on [0.25, 0.75] and higher outside
    flat = np.stack([np.array([[-0.75, 0.25, 0.5]]), np.array([[-0.25, -0.25, 0.5]]), np.array([[0.25, -0.75, 0.5]])])
    for errors, s_low, loss in ((ends, 0.0, 1.0), (flat, 0.25, 1.0 / 3.0)):
        per_sample = route_continuous(errors, scales)
        assert per_sample.s.tolist() == [s_low] and per_sample.loss.tolist() == [loss]
        per_frame = route_continuous(np.repeat(errors, 2, axis=1), scales, np.array([0, 0]))
        assert per_frame.s.tolist() == [s_low, s_low] and per_frame.loss.tolist() == [loss, loss]
        # both samples in one block, each its own unit: still the lower scale
        both = route_continuous(np.concatenate([ends, flat], axis=1), scales, np.array([0, 1]))
        assert both.s.tolist() == [0.0, 0.25]
        assert best_global_scale(errors, scales) == (s_low, loss)
