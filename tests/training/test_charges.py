"""Starting charges: the closed-form fit recovers the per-species charges of a pure Coulomb reference."""

from __future__ import annotations

import numpy as np
import torch

from adascale.data.frames import Frame
from adascale.models.electrostatics import Electrostatics
from adascale.training.charges import fit_species_charges
from models.ewald_reference import COULOMB_EV_A

CHARGES = {1: 0.42, 8: -0.84, 11: 1.0}


def coulomb_cluster(seed: int) -> Frame:
    """A molecule of 3 species labelled with point-charge Coulomb forces (numpy); its 'bonded' pair (1 Å) is excluded."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:18]
    positions = (grid + rng.uniform(-0.2, 0.2, grid.shape)) * 3.0
    positions[1] = positions[0] + [1.0, 0.0, 0.0]  # a bonded pair: no Coulomb force between 0 and 1
    numbers = rng.choice([1, 8, 11], size=len(positions))
    q = np.array([CHARGES[z] for z in numbers])
    d = positions[:, None] - positions[None]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    r[0, 1] = r[1, 0] = np.inf
    forces = COULOMB_EV_A * np.sum((q[:, None] * q[None])[..., None] * d / r[..., None] ** 3, axis=1)
    return Frame(numbers, positions, np.zeros((3, 3)), np.zeros(3, bool), forces, None)


def test_fit_recovers_the_reference_charges_up_to_a_global_sign():
    frames = [coulomb_cluster(seed) for seed in range(3)]
    fitted = fit_species_charges(frames, [1, 8, 11], Electrostatics(4.0, "ewald"), bonded_below=1.5)
    expected = np.array([CHARGES[z] for z in (1, 8, 11)])
    assert np.allclose(fitted * np.sign(fitted[2]), expected, atol=1e-6)


def test_the_fit_leaves_the_model_electrostatics_untouched():
    """The fit works on a float64 copy: a float32 model keeps its float32 buffers."""
    electrostatics = Electrostatics(4.0, "pme").float()
    fit_species_charges([coulomb_cluster(0)], [1, 8, 11], electrostatics)
    assert {b.dtype for b in electrostatics.buffers() if b.is_floating_point()} == {torch.float32}
