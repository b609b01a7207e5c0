"""The long-range branch: shared branch checks, the exact charge constraint, and its electrostatic energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from branch_checks import SPECIES, BranchChecks, water_ion_frame

from adascale.models.batch import AtomsBatch
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN


def make_long_range(**kwargs) -> LongRangePaiNN:
    settings = dict(cutoff=4.0, features=16, interactions=2, average_neighbours=10.0, electrostatics="ewald") | kwargs
    return LongRangePaiNN(SPECIES, **settings).double().eval()


class TestLongRangeEwald(BranchChecks):
    separable = False

    def make_branch(self):
        return make_long_range()


@pytest.mark.parametrize("total_charge", [0.0, 1.0, -2.5])
def test_total_charge_is_exact_in_every_frame(total_charge):
    torch.manual_seed(1)
    branch = make_long_range(total_charge=total_charge)
    frames = [water_ion_frame(6, 1, 7.5, seed=s) for s in range(3)] + [water_ion_frame(3, 1, 5.0, seed=9, periodic=False)]
    batch = AtomsBatch.from_frames(frames, branch.cutoff, dtype=torch.float64)
    _, features = PaiNN.atom_energies(branch, batch)
    q = branch.charges(features, batch)
    per_frame = torch.zeros(batch.n_frames, dtype=torch.float64).index_add(0, batch.frame_index, q)
    assert q.std() > 0.01  # the charges are not trivially zero
    assert torch.allclose(per_frame, torch.full_like(per_frame, total_charge), rtol=0, atol=1e-12)


def test_energy_is_local_part_plus_q_phi():
    """atom_energies adds exactly q_i phi_i to the local PaiNN energies."""
    torch.manual_seed(2)
    branch = make_long_range()
    batch = AtomsBatch.from_frames([water_ion_frame(6, 1, 7.5, seed=5)], branch.cutoff, dtype=torch.float64)
    total, features = branch.atom_energies(batch)
    local, _ = PaiNN.atom_energies(branch, batch)
    q = branch.charges(features, batch)
    phi = branch.electrostatics(q, batch, batch.edge_vectors())
    assert torch.allclose(total, local + q * phi, atol=1e-12)
    assert float((q * phi).abs().sum()) > 1e-3


def test_ewald_and_pme_branches_agree():
    torch.manual_seed(3)
    ewald = make_long_range()
    pme = make_long_range(electrostatics="pme")
    pme.load_state_dict(ewald.state_dict())
    batch = AtomsBatch.from_frames([water_ion_frame(10, 2, 8.5, seed=6)], 4.0, dtype=torch.float64)
    a, b = ewald(batch), pme(batch)
    assert float(a["energy"]) == pytest.approx(float(b["energy"]), rel=1e-4, abs=1e-4)
    assert np.abs((a["forces"] - b["forces"]).numpy()).max() < 1e-3
