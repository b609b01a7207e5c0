"""The pair repulsion: the shared branch checks with walls that bite, its energy against a brute-force
sum over minimum-image pairs, and its settings' errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase.geometry import get_distances
from branch_checks import SPECIES, BranchChecks, evaluate, water_ion_frame

from adascale.models.io import build_model
from adascale.models.painn import PaiNN
from adascale.models.repulsion import PairRepulsion

# onsets (Å) that the test frames cross: intramolecular O-H (1.0 Å) and many intermolecular pairs
ONSETS = {(1, 8): 1.2} | {pair: 2.6 for pair in itertools.combinations_with_replacement(SPECIES, 2) if pair != (1, 8)}
REPULSION = {"pairs": [[a, b, r] for (a, b), r in ONSETS.items()], "energy": 0.5, "width": 0.3}


def painn(repulsion=None) -> PaiNN:
    torch.manual_seed(0)
    return PaiNN(SPECIES, cutoff=3.5, features=8, interactions=1, repulsion=repulsion).double().eval()


class TestPaiNNWithRepulsion(BranchChecks):
    def make_branch(self):
        return painn(REPULSION)


def test_wall_energy_is_the_brute_force_pair_sum():
    """E(with) - E(without) = Σ_{i<j} energy ((onset - r_ij) / width)³ over minimum-image pairs below their onset."""
    frame = water_ion_frame(12, 2, 8.0, seed=3)
    with_wall, without = evaluate(painn(REPULSION), [frame]), evaluate(painn(), [frame])
    _, r = get_distances(frame.positions, cell=frame.cell, pbc=frame.pbc)
    expected = 0.0
    for i, j in zip(*np.triu_indices(len(frame), k=1)):
        a, b = sorted((int(frame.numbers[i]), int(frame.numbers[j])))
        depth = ONSETS[(a, b)] - r[i, j]
        expected += REPULSION["energy"] * (depth / REPULSION["width"]) ** 3 if depth > 0 else 0.0
    assert expected > 1.0  # the walls bite in this frame
    assert float(with_wall["energy"] - without["energy"]) == pytest.approx(expected, rel=1e-10)
    assert float(with_wall["atom_energy"].sum() - without["atom_energy"].sum()) == pytest.approx(expected, rel=1e-10)


def test_no_wall_above_the_onsets_and_none_for_unlisted_pairs():
    """Walls at the closest distances change nothing; a pair without an onset gets no wall at all."""
    frame = water_ion_frame(12, 2, 8.0, seed=3)
    _, r = get_distances(frame.positions, cell=frame.cell, pbc=frame.pbc)
    np.fill_diagonal(r, np.inf)
    closest = {
        (a, b): r[np.ix_(frame.numbers == a, frame.numbers == b)].min()
        for a, b in itertools.combinations_with_replacement(SPECIES, 2)
    }
    at_closest = {"pairs": [[a, b, d] for (a, b), d in closest.items()], "energy": 1.0, "width": 0.2}
    only_oo = {"pairs": [[8, 8, 0.5]], "energy": 1.0, "width": 0.2}  # no pair of these species is this close
    reference = evaluate(painn(), [frame])["forces"]
    for repulsion in (at_closest, only_oo):
        assert torch.allclose(evaluate(painn(repulsion), [frame])["forces"], reference, atol=1e-12)


def test_repulsion_survives_the_model_config():
    model = painn(REPULSION)
    rebuilt = build_model(model.config())
    assert rebuilt.repulsion.config() == model.repulsion.config()
    assert torch.equal(rebuilt.repulsion.onsets, model.repulsion.onsets)


@pytest.mark.parametrize(
    ("pairs", "energy", "width", "message"),
    [([[8, 9, 2.0]], 1.0, 0.2, "outside"), ([[8, 8, 2.0]], 1.0, 0.0, "width > 0"), ([[8, 8, 2.0]], -1.0, 0.2, "energy >= 0")],
)
def test_bad_repulsion_settings_are_clear_errors(pairs, energy, width, message):
    with pytest.raises(ValueError, match=message):
        PairRepulsion(SPECIES, pairs, energy, width)
