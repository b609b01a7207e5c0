import itertools

import numpy as np
import pytest

from adascale.data.frames import Frame
from adascale.data.neighbours import neighbour_list
from adascale.errors import AdaScaleError


def _brute_force_pairs(frame: Frame, cutoff: float) -> dict[tuple[int, int, int, int, int], float]:
    """Every (i, j, shift) within the cutoff, over an explicit block of images wide enough for the cell."""
    cell, pbc = frame.cell, frame.pbc
    reach = []
    for k in range(3):
        if not pbc[k]:
            reach.append(range(1))
            continue
        normal = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
        width = abs(cell[k] @ normal) / np.linalg.norm(normal)
        n = int(np.ceil(cutoff / width)) + 1
        reach.append(range(-n, n + 1))
    pairs = {}
    for shift in itertools.product(*reach):
        offset = np.array(shift) @ cell
        for i, j in itertools.product(range(len(frame)), repeat=2):
            if i == j and shift == (0, 0, 0):
                continue
            d = np.linalg.norm(frame.positions[j] - frame.positions[i] + offset)
            if d < cutoff:
                pairs[(i, j, *shift)] = d
    return pairs


def _as_dict(nl):
    return {(int(i), int(j), *map(int, s)): d for i, j, s, d in zip(nl.i, nl.j, nl.shifts, nl.distances)}


def _random_frame(seed: int, pbc=(True, True, True), n: int = 9) -> Frame:
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(4, 7, 3)) + np.triu(rng.uniform(-2.5, 2.5, (3, 3)), 1)
    positions = rng.uniform(0, 1, (n, 3)) @ cell + rng.normal(0, 0.5, (n, 3))  # some atoms outside the cell
    return Frame(rng.integers(1, 18, n), positions, cell, np.array(pbc), None, None)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_neighbour_list_equals_brute_force_on_triclinic_cells(seed, pbc):
    frame = _random_frame(seed, pbc)
    cutoff = 5.5  # larger than half of some widths: several images of a pair must all appear
    nl = neighbour_list(frame, cutoff)
    expected = _brute_force_pairs(frame, cutoff)
    got = _as_dict(nl)
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-12)
    vectors = frame.positions[nl.j] - frame.positions[nl.i] + nl.shifts @ frame.cell
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), nl.distances, rtol=1e-12)
    assert nl.i.dtype == nl.j.dtype == nl.shifts.dtype == np.int64


def test_neighbour_list_of_a_molecule_without_cell():
    rng = np.random.default_rng(7)
    frame = Frame(np.full(12, 6), rng.uniform(-4, 4, (12, 3)), np.zeros((3, 3)), np.zeros(3, bool), None, None)
    nl = neighbour_list(frame, 3.0)
    assert _as_dict(nl).keys() == _brute_force_pairs(frame, 3.0).keys()
    assert not nl.shifts.any()


@pytest.mark.parametrize("seed", range(3))
def test_within_equals_a_fresh_list_at_the_smaller_cutoff(seed):
    frame = _random_frame(seed)
    big = neighbour_list(frame, 6.0)
    for cutoff in (2.0, 3.7, 6.0):
        small, fresh = big.within(cutoff), neighbour_list(frame, cutoff)
        assert small.cutoff == cutoff
        for name in ("i", "j", "shifts", "distances"):
            np.testing.assert_array_equal(getattr(small, name), getattr(fresh, name))


def test_within_refuses_a_larger_cutoff():
    nl = neighbour_list(_random_frame(0), 3.0)
    with pytest.raises(AdaScaleError, match="larger cutoff"):
        nl.within(3.5)


def test_neighbour_list_refuses_a_degenerate_periodic_cell():
    frame = _random_frame(0)
    frame.cell[2] = frame.cell[0] + frame.cell[1]
    with pytest.raises(AdaScaleError, match="degenerate"):
        neighbour_list(frame, 3.0)
