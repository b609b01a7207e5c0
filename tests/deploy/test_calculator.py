"""AdaScaleCalculator: the model's energy and forces inside ASE, stress from the strain derivative."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet

import adascale
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.io import save_model
from deploy.tiny_models import make_branches
from models.branch_checks import water_ion_frame


def numeric_stress(atoms, model, h: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(epsilon) by central differences of homogeneous strains (atoms move with the cell)."""
    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.zeros((3, 3))
                strain[i, j] += sign * h / 2
                strain[j, i] += sign * h / 2
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
                deformed.calc = AdaScaleCalculator(model, dtype="float64")
                energies.append(deformed.get_potential_energy())
            stress[i, j] = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    return stress


@pytest.mark.parametrize("which", ["local", "long_range", "mixture"])
def test_energy_forces_and_stress(which, mixture, periodic_frame):
    model = {"local": make_branches()[0], "long_range": make_branches()[1], "mixture": mixture}[which]
    atoms = periodic_frame.to_atoms()
    atoms.calc = AdaScaleCalculator(model, dtype="float64")
    expected = model(AtomsBatch.from_frame(periodic_frame, model.cutoff, dtype=torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(expected["energy"][0]), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"].numpy(), atol=1e-10)
    np.testing.assert_allclose(
        atoms.get_potential_energies(), expected["atom_energy"].detach().numpy(), atol=1e-10
    )  # each atom's own
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-5
    np.testing.assert_allclose(stress, numeric_stress(atoms, model), atol=1e-9)


def test_force_mixing_mode_mixes_branch_forces_per_atom(mixture, periodic_frame):
    batch = AtomsBatch.from_frame(periodic_frame, mixture.cutoff, dtype=torch.float64)
    _, inputs = mixture.components(batch)
    w = mixture.weights(inputs).detach()
    branch_forces = torch.stack([branch(batch)["forces"] for branch in mixture.branches])
    atoms = periodic_frame.to_atoms()
    atoms.calc = AdaScaleCalculator(mixture, mode="force_mixing", dtype="float64")
    np.testing.assert_allclose(atoms.get_forces(), torch.einsum("nk,knc->nc", w, branch_forces).numpy(), atol=1e-10)
    conservative = AdaScaleCalculator(mixture, dtype="float64").get_forces(periodic_frame.to_atoms())
    assert np.abs(conservative - atoms.get_forces()).max() > 1e-2  # the two deployment modes differ
    assert "stress" not in atoms.calc.implemented_properties  # not the gradient of an energy: no stress
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_loads_branch_and_mixture_directories_through_the_package(tmp_path, mixture, periodic_frame):
    save_model(tmp_path / "local", mixture.branches[0])
    save_model(tmp_path / "mix", mixture)
    for directory, model in ((tmp_path / "local", mixture.branches[0]), (tmp_path / "mix", mixture)):
        atoms = periodic_frame.to_atoms()
        atoms.calc = adascale.AdaScaleCalculator(str(directory), dtype="float64")
        expected = AdaScaleCalculator(model, dtype="float64").get_forces(periodic_frame.to_atoms())
        np.testing.assert_allclose(atoms.get_forces(), expected, atol=1e-10)


def test_bad_settings_and_inputs_are_clear_errors(mixture, periodic_frame):
    with pytest.raises(AdaScaleError, match="mode must be"):
        AdaScaleCalculator(mixture, mode="average")
    with pytest.raises(AdaScaleError, match="needs a mixture"):
        AdaScaleCalculator(mixture.branches[0], mode="force_mixing")
    small = water_ion_frame(3, 1, 6.0, seed=2).to_atoms()  # 6 Å box < twice the 4 Å cutoff
    with pytest.raises(AdaScaleError, match="cell too small"):
        AdaScaleCalculator(mixture).get_forces(small)
    molecule = water_ion_frame(3, 1, 6.0, seed=2, periodic=False).to_atoms()
    molecule.calc = AdaScaleCalculator(mixture)
    assert np.isfinite(molecule.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="periodic in 3D"):
        molecule.get_stress()
    slab = periodic_frame.to_atoms()
    slab.pbc = [True, True, False]
    slab.calc = AdaScaleCalculator(mixture.branches[0])  # a local branch: electrostatics need 0D or 3D
    assert np.isfinite(slab.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_calculator_drives_ases_own_md_loop(mixture, periodic_frame):
    atoms = periodic_frame.to_atoms()
    atoms.calc = AdaScaleCalculator(mixture)
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    start = atoms.get_positions()
    forces = atoms.get_forces()
    dynamics = VelocityVerlet(atoms, timestep=0.1 * 1e-2)  # ASE time units; tiny step
    dynamics.run(3)
    moved = atoms.get_positions() - start
    assert dynamics.nsteps == 3 and np.abs(moved).max() > 0
    # starting from rest, atoms move along their initial forces
    cosine = (moved * forces).sum(1) / (np.linalg.norm(moved, axis=1) * np.linalg.norm(forces, axis=1))
    assert cosine.min() > 0.99
