"""Seed-aware intervals (a bootstrap over seeds and frames) and the deployment chooser that uses them."""

from __future__ import annotations

import numpy as np
import pytest

from adascale.errors import AdaScaleError
from adascale.scales.metrics import (
    SEED_STREAM,
    FrameBootstrap,
    method_entry,
    resample_weights,
    seed_frame_bootstrap,
    seed_frame_ratio,
)
from adascale.scales.synthetic import synthetic_predictions
from adascale.scales.ties import choose_fastest, seconds_per_call, tied_candidates

B = 400


@pytest.fixture(scope="module")
def case():
    ps = synthetic_predictions(n_frames=30, atoms_per_frame=20, seed=3)
    loss = np.abs(ps.pred[1] - ps.ref).mean(axis=-1)
    return ps.frame, ps.masks(), loss


def test_one_seed_or_identical_seeds_give_the_frame_bootstrap(case):
    frame, masks, loss = case
    frames_only = method_entry(loss, masks, bootstrap=FrameBootstrap(frame, masks, n_resamples=B, seed=7))
    one = seed_frame_bootstrap([loss], frame, masks, n_resamples=B, seed=7)
    three = seed_frame_bootstrap([loss, loss.copy(), loss.copy()], frame, masks, n_resamples=B, seed=7)
    for subset in masks:
        assert one[subset] == frames_only[subset] and one["ci"][subset] == frames_only["ci"][subset]
        assert three[subset] == pytest.approx(frames_only[subset], rel=1e-12)
        assert three["ci"][subset] == pytest.approx(frames_only["ci"][subset], rel=1e-12)
        assert three["per_seed"][subset] == pytest.approx([frames_only[subset]] * 3, rel=1e-12)
    assert three["seeds"] == 3


def explicit_resamples(losses, frame, mask, seed):
    """(B,) by explicit loops: per resample, the mean over the drawn seeds of their MAE on the
    drawn frames' samples of ``mask`` (NaN where the drawn frames hold none)."""
    n_frames, n_seeds = int(frame.max()) + 1, len(losses)
    frame_counts = resample_weights(n_frames, B, seed)
    seed_counts = resample_weights(n_seeds, B, seed, stream=SEED_STREAM) if n_seeds > 1 else np.ones((B, 1))
    means = np.full(B, np.nan)
    for b in range(B):
        index = np.concatenate(
            [np.flatnonzero((frame == g) & mask) for g in np.repeat(np.arange(n_frames), frame_counts[b].astype(int))]
        )
        drawn = np.repeat(np.arange(n_seeds), seed_counts[b].astype(int))  # S seeds drawn with replacement
        if index.size:
            means[b] = np.mean([losses[s][index].mean() for s in drawn])
    return means


def test_the_interval_equals_an_explicit_two_level_resampling(case):
    frame, masks, loss = case
    rng = np.random.default_rng(0)
    losses = [loss * f + 0.01 * rng.random(loss.size) for f in (1.0, 1.2, 0.9)]
    entry = seed_frame_bootstrap(losses, frame, masks, n_resamples=B, seed=2, factor=10.0)
    for subset, mask in masks.items():
        means = explicit_resamples(losses, frame, mask, seed=2)
        assert entry["ci"][subset] == pytest.approx((10.0 * np.nanpercentile(means, [2.5, 97.5])).tolist(), rel=1e-9)
        assert entry[subset] == pytest.approx(10.0 * np.mean([x[mask].mean() for x in losses]), rel=1e-12)


def test_the_ratio_interval_pairs_seeds_and_frames_as_explicit_resampling_does(case):
    frame, masks, loss = case
    rng = np.random.default_rng(1)
    base = [loss * f + 0.01 * rng.random(loss.size) for f in (1.0, 1.3, 0.8)]  # seeds far apart, shared by both models
    better = [0.9 * x + 0.002 * rng.random(loss.size) for x in base]
    entry = seed_frame_ratio(better, base, frame, masks, n_resamples=B, seed=4)
    for subset, mask in masks.items():
        ratios = explicit_resamples(better, frame, mask, seed=4) / explicit_resamples(base, frame, mask, seed=4)
        assert entry["ci"][subset] == pytest.approx(np.nanpercentile(ratios, [2.5, 97.5]).tolist(), rel=1e-9)
        point = np.mean([x[mask].mean() for x in better]) / np.mean([x[mask].mean() for x in base])
        assert entry[subset] == pytest.approx(point, rel=1e-12)
        lo, hi = entry["ci"][subset]  # paired: the seeds' spread cancels, far narrower than either MAE's relative interval
        base_lo, base_hi = seed_frame_bootstrap(base, frame, masks, n_resamples=B, seed=4)["ci"][subset]
        assert hi - lo < 0.5 * (base_hi - base_lo) / np.mean([x[mask].mean() for x in base])
    with pytest.raises(AdaScaleError, match="3 seeds against 2"):
        seed_frame_ratio(better, base[:2], frame, masks)


def test_seeds_far_apart_widen_the_interval_to_cover_them(case):
    frame, masks, loss = case
    low, high = loss, 1.5 * loss
    entry = seed_frame_bootstrap([low, high], frame, masks, n_resamples=B, seed=0)
    pooled = method_entry(0.5 * (low + high), masks, bootstrap=FrameBootstrap(frame, masks, n_resamples=B, seed=0))
    for subset, mask in masks.items():
        lo, hi = entry["ci"][subset]
        assert lo <= low[mask].mean() and hi >= high[mask].mean(), subset
        assert entry[subset] == pytest.approx(pooled[subset], rel=1e-12)
        frames_lo, frames_hi = pooled["ci"][subset]  # frames alone: far narrower, covering neither seed
        assert frames_lo > low[mask].mean() and frames_hi < high[mask].mean()


def test_no_seed_is_an_error(case):
    frame, masks, _ = case
    with pytest.raises(AdaScaleError, match="at least one seed"):
        seed_frame_bootstrap([], frame, masks)


# The measurement: the mixture led the long-range branch by 0.03 kJ/mol/nm on validation
# and ran MD at 0.57x its speed.
SCORES = {
    "mixture": {"mae": 45.50, "ci": [44.1, 47.9]},
    "long_range": {"mae": 45.53, "ci": [44.2, 48.0]},
    "router": {"mae": 45.9, "ci": [44.5, 48.4]},
    "local": {"mae": 55.55, "ci": [54.0, 57.9]},
    "broken": {"mae": None, "ci": None},
}
SECONDS = {"mixture": 1 / 6.41, "long_range": 1 / 11.16, "router": 1 / 6.0, "local": 1 / 20.0}


def test_tied_candidates_lie_within_the_best_interval():
    assert tied_candidates(SCORES) == ["mixture", "long_range", "router"]
    narrow = {**SCORES, "mixture": {"mae": 45.50, "ci": [45.45, 45.52]}}
    assert tied_candidates(narrow) == ["mixture"]
    no_interval = {"a": {"mae": 1.0, "ci": None}, "b": {"mae": 1.0}, "c": {"mae": 1.01, "ci": [0.5, 2.0]}}
    assert tied_candidates(no_interval) == ["a", "b"]
    with pytest.raises(AdaScaleError):
        tied_candidates({"broken": {"mae": None}})


def test_the_fastest_tied_candidate_is_chosen_and_the_record_says_why():
    why = choose_fastest(SCORES, SECONDS)
    assert why["model"] == "long_range" and why["best_on_validation"] == "mixture"
    assert why["tied"] == ["mixture", "long_range", "router"]
    assert "long_range" in why["reason"] and "mixture" in why["reason"]
    by_name = {c["name"]: c for c in why["candidates"]}
    assert by_name["local"]["tied"] is False and by_name["local"]["seconds_per_call"] == SECONDS["local"]  # fast, but not tied
    assert set(by_name) == set(SCORES)


def test_equally_fast_goes_to_the_lower_mae_and_untimed_candidates_wait():
    close = {**SECONDS, "mixture": SECONDS["long_range"] * 1.03}  # within 5 %: timing noise
    assert choose_fastest(SCORES, close)["model"] == "mixture"
    assert choose_fastest(SCORES, close, speed_tolerance=0.0)["model"] == "long_range"
    assert choose_fastest(SCORES, {"router": 1.0})["model"] == "router"  # the only tied one timed
    untimed = choose_fastest(SCORES, {})
    assert untimed["model"] == "mixture" and "no tied candidate was timed" in untimed["reason"]
    alone = choose_fastest({"a": {"mae": 1.0, "ci": [0.9, 1.1]}, "b": {"mae": 2.0, "ci": [1.9, 2.1]}}, {"a": 2.0, "b": 1.0})
    assert alone["model"] == "a" and alone["tied"] == ["a"]


def test_seconds_per_call_is_the_median_after_warmup():
    calls = []
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # durations 1, 3, 2 (the warm-up call is not timed)
    seconds = seconds_per_call(lambda: calls.append(1), repeats=3, warmup=2, clock=lambda: next(ticks))
    assert seconds == 2.0 and len(calls) == 5
    with pytest.raises(AdaScaleError):
        seconds_per_call(lambda: None, repeats=0)
