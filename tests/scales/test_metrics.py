"""Report metrics: frame-bootstrap intervals, subset MAEs, distance bins, gain fractions."""

from __future__ import annotations

import numpy as np
import pytest

from adascale.scales.metrics import FrameBootstrap, gain_recovered, mae_by_bins, method_entry, subset_mae


def test_interval_is_the_percentile_of_explicit_frame_resamples(rng):
    frame = np.repeat([4, 9, 2, 7, 5], [3, 5, 2, 6, 4])
    loss = rng.exponential(size=frame.size)
    mask = rng.uniform(size=frame.size) < 0.7
    boot = FrameBootstrap(frame, {"sub": mask}, n_resamples=300, seed=1)
    assert (boot.weights.sum(axis=1) == 5).all()  # each resample draws as many frames as there are
    ids = np.unique(frame)  # frame_groups orders non-sorted frames like np.unique
    means = []
    for weights in boot.weights:
        drawn = np.concatenate([np.flatnonzero((frame == f) & mask) for f, w in zip(ids, weights) for _ in range(int(w))])
        if drawn.size:
            means.append(loss[drawn].mean())
    mae, interval = boot.summarize(loss)["sub"]
    assert mae == pytest.approx(loss[mask].mean(), rel=1e-12)
    np.testing.assert_allclose(interval, np.percentile(means, [2.5, 97.5]), rtol=1e-12)


def test_correlated_atoms_widen_the_interval_as_frames_demand():
    # 40 frames of 500 atoms, each frame's atoms share one error: the honest interval is the
    # spread of 40 frame means (half-width ~ 1.96 * 0.1 / sqrt(40) = 0.031), not of 20000 atoms
    rng = np.random.default_rng(0)
    frame = np.repeat(np.arange(40), 500)
    loss = np.repeat(rng.normal(1.0, 0.1, 40), 500)
    _, (lo, hi) = FrameBootstrap(frame, {"all": np.ones(frame.size, bool)}, seed=0).summarize(loss)["all"]
    assert lo < loss.mean() < hi
    assert 0.04 < hi - lo < 0.09


def test_same_seed_same_interval_and_empty_subset(rng):
    frame = np.repeat(np.arange(10), 5)
    loss = rng.uniform(size=50)
    masks = {"all": np.ones(50, bool), "none": np.zeros(50, bool)}
    a, b = FrameBootstrap(frame, masks, seed=3), FrameBootstrap(frame, masks, seed=3)
    assert a.summarize(loss) == b.summarize(loss)
    assert a.summarize(loss)["none"] == (None, None)


def test_method_entry_scales_units_and_carries_extras(rng):
    frame = np.repeat(np.arange(6), 4)
    loss = rng.uniform(size=24)
    masks = {"all": np.ones(24, bool), "ions": frame < 3, "close_contact": np.zeros(24, bool)}
    boot = FrameBootstrap(frame, masks, n_resamples=200)
    entry = method_entry(loss, masks, bootstrap=boot, factor=10.0, s=0.5)
    assert entry["all"] == pytest.approx(10 * loss.mean())
    assert entry["ions"] == pytest.approx(10 * loss[:12].mean())
    assert entry["close_contact"] is None and entry["ci"]["close_contact"] is None
    lo, hi = entry["ci"]["all"]
    assert lo <= entry["all"] <= hi and entry["s"] == 0.5
    assert subset_mae(loss, masks["ions"]) == pytest.approx(loss[:12].mean())


def test_mae_by_bins_matches_a_loop(rng):
    values = rng.uniform(0, 1.5, 300)
    values[:7] = np.nan
    losses = {"a": rng.uniform(size=300), "b": rng.uniform(size=300)}
    mask = rng.uniform(size=300) < 0.8
    edges = [0.2, 0.5, 1.0]
    frame = np.repeat(np.arange(30), 10)
    bins = mae_by_bins(losses, values, edges, frame, mask=mask, factor=2.0, n_resamples=200)
    bounds = [(0.2, 0.5), (0.5, 1.0), (1.0, np.inf)]
    assert [(b["lo"], b["hi"]) for b in bins] == [(0.2, 0.5), (0.5, 1.0), (1.0, None)]
    for item, (lo, hi) in zip(bins, bounds):
        inside = mask & (values >= lo) & (values < hi)
        assert item["count"] == inside.sum()
        for name, loss in losses.items():
            assert item["mae"][name] == pytest.approx(2.0 * loss[inside].mean())
            lo, hi = item["ci"][name]
            assert lo <= item["mae"][name] <= hi


def test_gain_recovered():
    assert gain_recovered(400.0, 381.0, 380.0) == pytest.approx(0.95)
    assert gain_recovered(400.0, 390.0, 400.0) is None
    assert gain_recovered(None, 1.0, 0.0) is None
