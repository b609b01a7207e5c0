"""Pool refinement: monotone on its fit set, finds known optimal pools, respects its budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adascale.errors import AdaScaleError
from adascale.predictions import frame_groups
from adascale.scales.oracles import ScaleLosses, anchor_errors
from adascale.scales.refine import refine_pool
from adascale.scales.synthetic import synthetic_predictions


def table(seed: int, *, anchors: int = 2, per_frame: bool = False, **kwargs) -> ScaleLosses:
    ps = synthetic_predictions(n_frames=12, atoms_per_frame=20, n_anchors=anchors, seed=seed, **kwargs)
    groups = frame_groups(ps.frame)[0] if per_frame else None
    return ScaleLosses(anchor_errors(ps), ps.scales, groups)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([2, 3]), st.booleans(), st.sampled_from(["insert", "gradient"]))
def test_no_step_raises_the_fit_loss(seed, anchors, per_frame, update):
    losses = table(seed, anchors=anchors, per_frame=per_frame)
    history = refine_pool(losses, [0.0, 1.0], max_size=7, tol=0.0, update=update)
    for before, after in zip(history, history[1:]):
        assert after.loss <= before.loss
        assert np.isclose(after.loss, losses.pool_loss(after.pool), rtol=1e-12)  # recorded loss is the real L(P)
        if after.kind == "insert":
            assert after.pool.size == before.pool.size + 1 and set(before.pool) < set(after.pool)
        else:
            assert set(np.intersect1d(before.pool, losses.scales)) <= set(after.pool)  # anchors stay put
    assert all(step.pool.size <= 7 for step in history)


def test_insertion_finds_the_known_optimal_pool():
    # every sample is exactly right at one of {0, 0.25, 0.5, 1}: that pool has zero loss,
    # and no smaller pool has (each of the four scales is used)
    losses = table(1, optimal_scales=[0.0, 0.25, 0.5, 1.0], noise=0.0)
    history = refine_pool(losses, [0.0, 1.0], max_size=9, tol=1e-6)
    np.testing.assert_array_equal(history[-1].pool, [0.0, 0.25, 0.5, 1.0])
    assert history[-1].loss < 1e-12
    assert [step.kind for step in history] == ["init", "insert", "insert"]


def test_gradient_updates_reach_an_optimum_that_midpoints_cannot():
    # the best interior scale is 0.3, never a midpoint: insertion puts 0.5, the moves carry it to 0.3
    losses = table(2, optimal_scales=[0.0, 0.3, 1.0], noise=0.0)
    inserted = refine_pool(losses, [0.0, 1.0], max_size=3, tol=0.0, update="insert")
    moved = refine_pool(losses, [0.0, 1.0], max_size=3, tol=0.0, update="gradient")
    np.testing.assert_array_equal(inserted[-1].pool, [0.0, 0.5, 1.0])
    assert inserted[-1].loss > 0.01
    np.testing.assert_allclose(moved[-1].pool, [0.0, 0.3, 1.0], atol=1e-9)
    assert moved[-1].loss < 1e-9 and "move" in [step.kind for step in moved]


def test_stopping_rules():
    losses = table(5)
    assert len(refine_pool(losses, [0.0, 1.0], max_size=2)) == 1  # already at the size budget
    full = refine_pool(losses, [0.0, 1.0], max_size=9, tol=0.0)
    assert full[-1].pool.size == 9
    strict = refine_pool(losses, [0.0, 1.0], max_size=9, tol=0.05)
    gains = [(a.loss - b.loss) / a.loss for a, b in zip(strict, strict[1:])]
    assert all(g >= 0.05 for g in gains) and strict[-1].pool.size < 9
    with pytest.raises(AdaScaleError, match="update"):
        refine_pool(losses, [0.0, 1.0], update="newton")


def brute_pool_loss(errors: np.ndarray, scales: np.ndarray, pool, groups: np.ndarray | None = None) -> float:
    """L(P) straight from the definitions: F(s) = (1-t) F_j + t F_j+1, l_i = mean_c |E_i,c(s)|,
    each unit (sample or frame) takes its best scale of the pool, mean over samples."""
    columns = []
    for p in pool:
        j = min(int(np.searchsorted(scales, p, side="right")) - 1, len(scales) - 2)
        t = (p - scales[j]) / (scales[j + 1] - scales[j])
        loss = np.abs((1 - t) * errors[j] + t * errors[j + 1]).mean(axis=-1)
        columns.append(loss if groups is None else np.bincount(groups, loss))
    return float(np.min(columns, axis=0).sum() / errors.shape[1])


def brute_best_insertion(losses: ScaleLosses, pool: np.ndarray) -> tuple[float, float]:
    """(midpoint, L(P with it)) minimising L over every midpoint of adjacent scales, by brute force."""
    tried = [
        (brute_pool_loss(losses.errors, losses.scales, np.append(pool, c), losses.groups), c) for c in (pool[:-1] + pool[1:]) / 2
    ]
    loss, c = min(tried)
    return c, loss


@pytest.mark.parametrize("seed, anchors, per_frame", [(0, 2, False), (1, 2, False), (2, 3, False), (3, 2, True), (4, 3, True)])
def test_every_insertion_is_the_brute_force_best_midpoint(seed, anchors, per_frame):
    losses = table(seed, anchors=anchors, per_frame=per_frame)
    history = refine_pool(losses, [0.0, 1.0], max_size=8, tol=0.0)
    assert len(history) == 7  # six insertions, none skipped
    for before, after in zip(history, history[1:]):
        (inserted,) = np.setdiff1d(after.pool, before.pool)
        c, loss = brute_best_insertion(losses, before.pool)
        assert inserted == c
        assert after.loss == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("seed, per_frame", [(0, False), (6, False), (7, True)])
def test_refinement_stops_exactly_at_its_relative_tolerance(seed, per_frame):
    """Gain = (L(P) - L(P with c)) / L(P). Set tol just under the smallest of the first three
    greedy gains: the run must take at least those three steps, every accepted gain is >= tol,
    and the first rejected (brute-force best) insertion gains < tol."""
    losses = table(seed, per_frame=per_frame)
    free = refine_pool(losses, [0.0, 1.0], max_size=9, tol=0.0)
    gains = [(a.loss - b.loss) / a.loss for a, b in zip(free, free[1:])]
    tol = 0.99 * min(gains[:3])
    history = refine_pool(losses, [0.0, 1.0], max_size=9, tol=tol)
    assert len(history) >= 4
    for a, b in zip(history, history[1:]):
        assert (a.loss - b.loss) / a.loss >= tol
    assert history[-1].pool.size < 9  # stopped by the tolerance, not the budget
    _, rejected = brute_best_insertion(losses, history[-1].pool)
    assert (history[-1].loss - rejected) / history[-1].loss < tol


def test_gradient_update_needs_several_moves_and_reaches_the_optimum():
    """Samples whose loss is w_i |s - s°_i| (E(s) = (s - s°) D_i). From the inserted 0.5, Lloyd
    moves 0.5 -> 0.4 -> 0.21 -> 0.11: each move draws a heavier cluster on the left into
    the interior scale's share, (0.25, 0.75) -> (0.2, 0.7) -> (0.105, 0.605). 0.11 is the
    global optimum of L({0, p, 1}) (brute force over a fine grid and every kink)."""
    clusters = {0.6: 10, 0.4: 11, 0.21: 22, 0.11: 50}
    s_true = np.repeat(list(clusters), list(clusters.values()))
    d = np.random.default_rng(0).normal(size=(s_true.size, 3))
    errors = np.stack([-s_true[:, None] * d, (1 - s_true[:, None]) * d])
    losses = ScaleLosses(errors, np.array([0.0, 1.0]))
    history = refine_pool(losses, [0.0, 1.0], max_size=3, tol=0.0, update="gradient")
    moves = [step.pool[1] for step in history if step.kind == "move"]
    np.testing.assert_allclose(moves, [0.4, 0.21, 0.11], atol=1e-12)
    kinks = np.concatenate([s_true, 2 * s_true, 2 * s_true - 1, np.linspace(0, 1, 10001)])
    best = min(brute_pool_loss(errors, losses.scales, [0.0, p, 1.0]) for p in np.unique(np.clip(kinks, 0, 1)))
    assert history[-1].loss == pytest.approx(best, rel=1e-12)
    assert brute_pool_loss(errors, losses.scales, [0.0, 0.4, 1.0]) > 1.1 * best  # one move is far from it
