import numpy as np
import pytest

from adascale.data.regimes import nearest_ion_distance, subset_masks


def _brute_force_d_ion(positions, numbers, cell, ions=(11, 17)):
    """Nearest other ion over an explicit 7x7x7 block of images (nm)."""
    out = np.full(len(positions), np.nan)
    shifts = np.array([[a, b, c] for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)]) @ cell
    for i, ri in enumerate(positions):
        best = np.inf
        for j, rj in enumerate(positions):
            if numbers[j] not in ions or i == j:
                continue
            best = min(best, np.linalg.norm(rj + shifts - ri, axis=1).min())
        out[i] = best * 0.1 if np.isfinite(best) else np.nan
    return out


@pytest.mark.parametrize("seed", range(5))
def test_nearest_ion_distance_matches_brute_force_on_triclinic_cells(seed):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(6, 10, 3)) + np.triu(rng.uniform(-3, 3, (3, 3)), 1)
    n = 12
    frac = rng.uniform(0, 1, (n, 3))
    positions = frac @ cell
    numbers = rng.choice([1, 8, 11, 17], size=n)
    numbers[:2] = [11, 17]
    got = nearest_ion_distance(positions, numbers, cell, np.array([True] * 3))
    np.testing.assert_allclose(got, _brute_force_d_ion(positions, numbers, cell), rtol=1e-12)


def test_nearest_ion_distance_is_nan_without_another_ion():
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    numbers = np.array([11, 8, 1])
    d = nearest_ion_distance(positions, numbers, np.zeros((3, 3)), np.array([False] * 3))
    assert np.isnan(d[0])
    np.testing.assert_allclose(d[1:], [0.1, 0.2])


def test_subset_masks_keep_water_out_of_close_contact():
    species = np.array([11, 17, 8, 1, 11])
    d = np.array([0.3, 0.3, 0.2, 0.25, 0.9])
    masks = subset_masks(species, d)
    assert masks["all"].all()
    assert masks["ions"].tolist() == [True, True, False, False, True]
    assert masks["close_contact"].tolist() == [True, True, False, False, False]
