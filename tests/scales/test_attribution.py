"""Seed-null attribution against brute force, and its two defining cases: a seed pair of pure
noise gives an oracle gain but nothing attributable; a planted regime effect is attributed."""

from __future__ import annotations

import numpy as np
import pytest

from adascale.errors import AdaScaleError
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze, seed_null
from adascale.scales.metrics import resample_weights
from adascale.scales.synthetic import synthetic_predictions

GRID = np.linspace(0.0, 1.0, 4001)
RESAMPLES = 200


def pair(layout: PredictionSet, error_a: np.ndarray, error_b: np.ndarray, names=("a", "b")) -> PredictionSet:
    """Two anchors on ``layout``'s frames and atoms whose force errors are the given (N, 3)."""
    return PredictionSet(
        ref=layout.ref,
        pred=np.stack([layout.ref + error_a, layout.ref + error_b]),
        scales=np.array([0.0, 1.0]),
        species=layout.species,
        frame=layout.frame,
        atom=layout.atom,
        d_ion=layout.d_ion,
        branch_names=list(names),
    )


def noise_pair(layout: PredictionSet, seed: int, close_contact_factor: float = 1.0) -> PredictionSet:
    """Two models whose errors are independent noise (0.3 eV/Å); the second one's error is
    multiplied by ``close_contact_factor`` on close-contact ions (a planted regime effect)."""
    rng = np.random.default_rng(seed)
    a, b = 0.3 * rng.normal(size=(2, layout.N, 3))
    b[layout.masks()["close_contact"]] *= close_contact_factor
    return pair(layout, a, b)


def layout(seed: int, n_frames: int = 60) -> PredictionSet:
    return synthetic_predictions(n_frames=n_frames, atoms_per_frame=30, seed=seed)


def grid_losses(ps: PredictionSet) -> np.ndarray:
    """(G, N) l_i(s) on a dense grid, straight from F(s) = (1 - s) F_0 + s F_1."""
    e = ps.pred - ps.ref
    return np.abs((1 - GRID)[:, None, None] * e[0] + GRID[:, None, None] * e[1]).mean(axis=-1)


def brute_pair(ps: PredictionSet, fit: PredictionSet) -> dict[str, np.ndarray]:
    """Per-sample losses: best single s on the fit set's grid, best anchor, best grid s per sample."""
    s_best = GRID[grid_losses(fit).mean(axis=1).argmin()]
    dense = grid_losses(ps)
    return {"best": dense[np.abs(GRID - s_best).argmin()], "hard": dense[[0, -1]].min(axis=0), "continuous": dense.min(axis=0)}


def brute_attribution(scale: dict, null: dict, ps: PredictionSet, seed: int = 0) -> dict:
    """Gains and the 95 % interval of their difference, resampling frames with explicit index arrays."""
    masks = ps.masks()
    frames = np.unique(ps.frame)
    members = [np.flatnonzero(ps.frame == f) for f in frames]
    draws = [
        np.concatenate([members[g] for g in np.repeat(np.arange(len(frames)), counts.astype(int))])
        for counts in resample_weights(len(frames), RESAMPLES, seed)
    ]

    def gain(losses: dict, oracle: str, index: np.ndarray, mask: np.ndarray) -> float:
        keep = index[mask[index]]
        return 1.0 - losses[oracle][keep].sum() / losses["best"][keep].sum()

    out = {}
    for oracle in ("hard", "continuous"):
        out[oracle] = {}
        for subset, mask in masks.items():
            every = np.arange(ps.N)
            diffs = [gain(scale, oracle, d, mask) - gain(null, oracle, d, mask) for d in draws if mask[d].any()]
            out[oracle][subset] = {
                "scale_gain": gain(scale, oracle, every, mask),
                "seed_gain": gain(null, oracle, every, mask),
                "ci": np.percentile(diffs, [2.5, 97.5]).tolist(),
            }
    return out


@pytest.fixture(scope="module")
def planted():
    """A scale pair whose long-range anchor is 5x better in close contact, and a seed pair of noise."""
    test, valid = layout(1), layout(2)
    return {
        "scale": noise_pair(test, 10, close_contact_factor=0.2),
        "scale_fit": noise_pair(valid, 11, close_contact_factor=0.2),
        "null": noise_pair(test, 12),
        "null_fit": noise_pair(valid, 13),
    }


def planted_report(planted, **kwargs) -> dict:
    return analyze(
        planted["scale"],
        planted["scale_fit"],
        "valid",
        null=planted["null"],
        null_fit=planted["null_fit"],
        null_label="null",
        n_resamples=RESAMPLES,
        **kwargs,
    )


def test_attribution_equals_brute_force(planted):
    report = planted_report(planted)
    brute = brute_attribution(
        brute_pair(planted["scale"], planted["scale_fit"]), brute_pair(planted["null"], planted["null_fit"]), planted["scale"]
    )
    for oracle in ("hard", "continuous"):
        for subset in ("all", "ions", "close_contact"):
            got, want = report["attribution"][oracle][subset], brute[oracle][subset]
            # the grid finds the minima to within its step (2.5e-4 of the scale axis)
            assert got["scale_gain"] == pytest.approx(want["scale_gain"], abs=2e-3)
            assert got["seed_gain"] == pytest.approx(want["seed_gain"], abs=2e-3)
            assert got["attributable"] == pytest.approx(got["scale_gain"] - got["seed_gain"], abs=1e-12)
            assert got["ci"] == pytest.approx(want["ci"], abs=4e-3)
    settings = report["settings"]["attribution"]
    assert settings["null"] == "null" and settings["null_fitted_on"] == "null fit set"


def test_a_planted_close_contact_effect_is_attributed_to_scale(planted):
    block = planted_report(planted)["attribution"]
    for oracle in ("hard", "continuous"):
        close = block[oracle]["close_contact"]
        assert close["ci"][0] > 0.2, close  # clearly positive where the effect was planted
        assert close["attributable"] > block[oracle]["all"]["attributable"] + 0.1


def test_a_seed_pair_of_noise_has_an_oracle_gain_but_nothing_attributable():
    """Both pairs are noise of one size: the per-atom oracle profits from either, by the same amount."""
    test, valid = layout(3), layout(4)
    report = analyze(
        noise_pair(test, 20),
        noise_pair(valid, 21),
        "valid",
        null=noise_pair(test, 22),
        null_fit=noise_pair(valid, 23),
        n_resamples=RESAMPLES,
    )
    for oracle, block in report["attribution"].items():
        for subset, item in block.items():
            assert item["ci"][0] < 0.0 < item["ci"][1], (oracle, subset, item)
            if oracle == "continuous":  # (the best anchor loses to s = 0.5, which averages the noise away)
                assert item["seed_gain"] > 0.2 and item["scale_gain"] > 0.2, (subset, item)


def test_frames_are_resampled_jointly():
    """A null identical to the scale pair: every resample gives attributable exactly 0, which
    independent resampling of the two sets would not."""
    ps = noise_pair(layout(5, n_frames=20), 30)
    for granularity in ("sample", "frame"):
        report = analyze(ps, null=ps, n_resamples=100, granularity=granularity)
        for block in report["attribution"].values():
            for item in block.values():
                assert item["attributable"] == 0.0 and item["ci"] == [0.0, 0.0]
        continuous = [item["scale_gain"] for item in report["attribution"]["continuous"].values()]
        assert min(continuous) > (0.1 if granularity == "sample" else 0.0)  # one s per frame gains little on noise
        assert report["settings"]["attribution"]["null_fitted_on"].startswith("in-sample")


def test_attribution_by_distance_bins_partition_the_atoms_and_locate_the_effect(planted):
    report = planted_report(planted)
    block = report["attribution_by_distance"]
    ions = planted["scale"].masks()["ions"]
    for oracle in ("hard", "continuous"):
        for subset, size in (("all", planted["scale"].N), ("ions", int(ions.sum()))):
            bins = block[subset][oracle]
            assert sum(b["count"] for b in bins) == size
            assert [b["lo"] for b in bins] == block["edges_nm"]
        for b in block["ions"][oracle]:  # the ions below 0.6 nm are the close-contact ones
            if b["count"] and b["hi"] is not None and b["hi"] <= 0.6:
                assert b["ci"][0] > 0.1, b
            elif b["count"]:
                assert b["ci"][0] < 0.1, b


def test_a_null_set_on_other_frames_or_atoms_is_refused(planted):
    scale = planted["scale"]
    other_frames = noise_pair(layout(9), 40)  # same shapes, other configurations
    shuffled = planted["null"]
    order = np.arange(scale.N)
    order[[0, 1]] = order[[1, 0]]  # two atoms of frame 0 swapped
    swapped = PredictionSet(
        ref=shuffled.ref[order],
        pred=shuffled.pred[:, order],
        scales=shuffled.scales,
        species=shuffled.species[order],
        frame=shuffled.frame[order],
        atom=shuffled.atom[order],
        d_ion=shuffled.d_ion[order],
        branch_names=shuffled.branch_names,
    )
    fewer = noise_pair(layout(1, n_frames=59), 41)
    for null, field in ((other_frames, "ref"), (swapped, "atom"), (fewer, "samples")):
        with pytest.raises(AdaScaleError, match=field) as caught:
            analyze(scale, null=null, null_label="seeds.npz", n_resamples=10)
        assert str(caught.value).startswith("seeds.npz: ") and "\n" not in str(caught.value)


def test_seed_null_alone_equals_the_blocks_of_analyze(planted):
    report = planted_report(planted)
    alone = seed_null(
        planted["scale"],
        planted["null"],
        planted["scale_fit"],
        planted["null_fit"],
        fit_label="valid",
        null_label="null",
        n_resamples=RESAMPLES,
    )
    assert alone["attribution"] == report["attribution"]
    assert alone["attribution_by_distance"] == report["attribution_by_distance"]
    assert alone["settings"] | {"granularity": "sample"} == report["settings"]["attribution"] | {
        "fitted_on": "valid",
        "granularity": "sample",
    }
