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
