"""The RDF, MSD and block-error code path against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from adascale.validate import analysis


def test_ideal_gas_rdf_is_one_within_its_statistical_error():
    """Uniform random points: g(r) = 1. Between 2 and 6 Å each bin holds thousands of pairs, so
    the bin-to-bin scatter is a few per cent; its mean is 1 to within that over sqrt(bins)."""
    rng = np.random.default_rng(0)
    n, length, frames = 400, 20.0, 5
    positions = rng.uniform(0, length, (frames, n, 3))
    numbers = np.where(np.arange(n) < 200, 8, 1)
    r, g = analysis.rdf(positions, np.full((frames, 3), length), numbers, np.arange(n), (8, 1))
    assert r[1] - r[0] == pytest.approx(analysis.BIN_A) and r[-1] < analysis.R_MAX_A
    far = g[r > 2.0]
    pairs_per_bin = 200 * 200 / length**3 * 4 * np.pi * r[r > 2.0] ** 2 * analysis.BIN_A * frames
    expected_scatter = np.sqrt(np.mean(1 / pairs_per_bin))
    assert abs(far.mean() - 1) < 4 * expected_scatter / np.sqrt(len(far))
    assert far.std() == pytest.approx(expected_scatter, rel=0.3)


def test_simple_cubic_lattice_peaks_at_its_shell_distances():
    """A simple cubic lattice of spacing a: neighbours at a, a√2, a√3, 2a, ... and nothing between."""
    a, cells = 3.0, 5
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    r, g = analysis.rdf(grid[None], np.full((1, 3), a * cells), np.full(len(grid), 8), np.arange(len(grid)), (8, 8))
    shells = np.sqrt(np.array([1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12])) * a
    occupied = r[g > 0]
    assert np.all(np.min(np.abs(occupied[:, None] - shells[None]), axis=1) < analysis.BIN_A)
    assert all((np.abs(r - shell) < analysis.BIN_A).any() for shell in shells[shells < analysis.R_MAX_A])


def test_pairs_within_a_molecule_are_left_out():
    """Two atoms 1 Å apart: counted as a pair of two molecules, absent as one molecule."""
    positions = np.array([[[5.0, 5.0, 5.0], [6.0, 5.0, 5.0]]])
    boxes = np.full((1, 3), 15.0)
    numbers = np.array([8, 1])
    _, apart = analysis.rdf(positions, boxes, numbers, np.array([0, 1]), (8, 1))
    _, together = analysis.rdf(positions, boxes, numbers, np.array([0, 0]), (8, 1))
    assert apart.sum() > 0 and together.sum() == 0


def test_random_walk_gives_its_diffusion_coefficient_and_drift_is_removed():
    """Gaussian steps of variance 2 D dt per axis: MSD = 6 D t. A uniform drift of every atom (the
    centre of mass moving) must not change D."""
    rng = np.random.default_rng(1)
    d_a2_ps, dt, frames, n = 0.25, 0.1, 400, 600  # 0.25 Å²/ps = 2.5e-9 m²/s, water-like
    steps = rng.normal(0, np.sqrt(2 * d_a2_ps * dt), (frames, n, 3))
    walk = np.cumsum(steps, axis=0) + 3.0 * np.arange(frames)[:, None, None] * dt  # drift 3 Å/ps
    result = analysis.diffusion(walk, np.ones(n), np.arange(n), dt, groups=5)
    assert result["mean"] == pytest.approx(2.5, abs=3 * result["sem"] + 0.05)
    assert 0 < result["sem"] < 0.2


def test_particles_moving_at_constant_speed_relative_to_the_rest():
    """Two light atoms moving at 1 and 2 Å/ps against a heavy rest: MSD = mean (v t)^2 = 2.5 t² (freud computes
    in float32, hence the tolerance)."""
    frames, dt = 50, 0.1
    positions = np.zeros((frames, 3, 3))
    positions[:, 0, 0] = 1.0 * np.arange(frames) * dt
    positions[:, 1, 1] = 2.0 * np.arange(frames) * dt
    masses = np.array([1e-9, 1e-9, 1.0])  # the movers barely move the centre of mass
    result = analysis.diffusion(positions, masses, np.array([0, 1]), dt, groups=2)
    lag, msd = np.array(result["lag_ps"]), np.array(result["msd_A2"])
    np.testing.assert_allclose(msd, 2.5 * lag**2, rtol=1e-3, atol=1e-4)


def test_block_mean_error_matches_independent_samples():
    rng = np.random.default_rng(2)
    values = rng.normal(1.0, 0.1, 10_000)
    mean, sem = analysis.block_mean(values, 10)
    assert mean == pytest.approx(1.0, abs=0.005) and sem == pytest.approx(0.1 / 100, rel=0.6)


def test_windows_cover_whole_widths_only():
    times = np.arange(0, 2.55, 0.1)
    found = analysis.windows(times, 1.0)
    assert len(found) == 2 and list(found[0]) == list(range(10)) and list(found[1]) == list(range(10, 20))


def test_closest_approach_per_species_pair_matches_brute_force():
    """Minimum-image distances between atoms of different molecules, per species pair: brute force."""
    from ase.geometry import get_distances

    rng = np.random.default_rng(3)
    lengths = np.array([13.0, 14.0, 15.0])
    positions = rng.uniform(0, 1, (90, 3)) * lengths
    numbers = rng.choice([1, 8, 11, 17], 90)
    molecule = np.repeat(np.arange(45), 2)  # pairs of atoms share a molecule
    found = analysis.closest_approach(positions, lengths, molecule, numbers)
    _, r = get_distances(positions, cell=np.diag(lengths), pbc=True)
    symbols = {1: "H", 8: "O", 11: "Na", 17: "Cl"}
    expected: dict[str, float] = {}
    for i, j in zip(*np.triu_indices(90, k=1)):
        if molecule[i] != molecule[j] and r[i, j] < analysis.R_MAX_A:
            a, b = sorted((numbers[i], numbers[j]), reverse=True)
            key = f"{symbols[a]}-{symbols[b]}"
            expected[key] = min(expected.get(key, np.inf), r[i, j])
    assert found.keys() == expected.keys()
    assert all(found[key] == pytest.approx(expected[key], abs=1e-5) for key in expected)
