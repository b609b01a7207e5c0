"""The local PaiNN branch: the shared branch checks plus its own properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from branch_checks import SPECIES, BranchChecks, evaluate, water_ion_frame

from adascale.errors import AdaScaleError
from adascale.models.painn import PaiNN
from adascale.nn.smooth import polynomial_envelope


class TestPaiNN(BranchChecks):
    def make_branch(self):
        return PaiNN(SPECIES, cutoff=3.5, features=16, interactions=2, average_neighbours=8.0).double().eval()


def test_unknown_species_is_a_clear_error():
    branch = PaiNN((1, 8), cutoff=3.0, features=8, interactions=1).double().eval()
    with pytest.raises(AdaScaleError, match=r"atomic number\(s\) \[11, 17\] unknown .*\[1, 8\]"):
        evaluate(branch, [water_ion_frame(4, 1, 6.0, seed=0)])


def test_energy_statistics_shift_each_species():
    """e_i = shift[Z_i] + scale * network: doubling the scale doubles the forces, shifts add per atom."""
    branch = PaiNN(SPECIES, cutoff=3.5, features=8, interactions=1).double().eval()
    frame = water_ion_frame(5, 1, 7.0, seed=4)
    base = evaluate(branch, [frame])
    shifts = np.array([0.5, -1.0, 2.0, 3.0])
    branch.set_energy_statistics(shifts, 2.0)
    scaled = evaluate(branch, [frame])
    expected_shift = sum(shifts[SPECIES.index(z)] for z in frame.numbers)
    assert torch.allclose(scaled["forces"], 2 * base["forces"])
    assert float(scaled["energy"]) == pytest.approx(2 * float(base["energy"]) + expected_shift)


def test_envelope_is_smooth_and_vanishes_at_the_cutoff():
    r = torch.tensor([0.0, 2.0, 3.0 - 1e-7, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    u = polynomial_envelope(r / 3.0)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    assert float(u[0]) == 1.0
    assert torch.allclose(u[2:], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(du[2:], torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(d2u[2:], torch.zeros(3, dtype=torch.float64), atol=1e-5)


class TestPaiNNShortInteractions(BranchChecks):
    """Atomic basis over 3.5 Å, message passing over 2.5 Å: still smooth at both radii."""

    def make_branch(self):
        return PaiNN(SPECIES, cutoff=3.5, features=16, interactions=2, interaction_cutoff=2.5).double().eval()
