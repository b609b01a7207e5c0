"""The deployed potential: the Verlet skin list is exact, dtypes, run directories and from_run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adascale.deploy.calculator import AdaScaleCalculator, load_model
from adascale.deploy.md import run_md
from adascale.deploy.potential import Potential
from adascale.errors import AdaScaleError
from adascale.models.io import save_model
from models.branch_checks import SPECIES, water_ion_frame


def test_skin_list_gives_the_fresh_lists_forces_at_every_step(mixture):
    """A 0.15 Å skin on a hot box rebuilds every few steps; between rebuilds, atoms leave the
    cell unwrapped. At every step the forces equal those of a list built from scratch."""
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1).to_atoms()
    atoms.positions += 0.5 * atoms.cell[0]  # half the atoms outside the cell, never wrapped
    calculator = AdaScaleCalculator(mixture, dtype="float64", skin=0.15)
    fresh = Potential(mixture, dtype="float64", skin=0.0)
    differences = []

    def check(step, total_energy, temperature):
        reference = fresh.compute(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
        differences.append(np.abs(calculator.get_forces(atoms) - reference.forces).max())  # unconstrained

    run_md(atoms, calculator, steps=30, timestep_fs=1.0, temperature_K=600.0, seed=3, on_step=check)
    rebuilds = calculator.potential.neighbours.rebuilds
    assert len(differences) == 31 and max(differences) < 1e-12
    assert 3 <= rebuilds < 31 == fresh.neighbours.rebuilds  # reused, and rebuilt when it had to be
    assert (atoms.get_scaled_positions(wrap=False) >= 1).any()  # vesin's shifts hold for unwrapped positions


def test_float32_is_close_to_float64_and_leaves_the_model_alone(mixture, periodic_frame):
    atoms = periodic_frame.to_atoms()
    single = AdaScaleCalculator(mixture).get_forces(atoms)  # float32 is the default
    double = AdaScaleCalculator(mixture, dtype="float64").get_forces(atoms)
    assert 0 < np.abs(single - double).max() < 1e-4 * np.abs(double).max()
    assert next(mixture.parameters()).dtype.is_floating_point and str(next(mixture.parameters()).dtype) == "torch.float64"
    with pytest.raises(AdaScaleError, match="dtype must be"):
        Potential(mixture, dtype="float16")


def test_run_directories_load_their_deployed_model_and_are_refused_as_model_directories(tmp_path, mixture, periodic_frame):
    run = tmp_path / "run"
    save_model(run / "deployed", mixture)
    (run / "report.json").write_text("{}")
    atoms = periodic_frame.to_atoms()
    from_run = AdaScaleCalculator.from_run(run, dtype="float64").get_forces(atoms)
    np.testing.assert_allclose(from_run, AdaScaleCalculator(mixture, dtype="float64").get_forces(atoms), atol=1e-12)
    with pytest.raises(AdaScaleError, match="is a run directory.*from_run"):
        AdaScaleCalculator(run)
    save_model(tmp_path / "bare_run" / "branches" / "local", mixture.branches[0])
    (tmp_path / "bare_run" / "report.json").write_text("{}")
    with pytest.raises(AdaScaleError, match="no deployed model"):
        AdaScaleCalculator.from_run(tmp_path / "bare_run")
    with pytest.raises(AdaScaleError, match="is a run directory"):
        load_model(tmp_path / "bare_run")
    with pytest.raises(AdaScaleError, match="no such run directory"):
        AdaScaleCalculator.from_run(tmp_path / "nowhere")


def test_unknown_species_are_refused(mixture):
    atoms = water_ion_frame(4, 1, 8.5, seed=2).to_atoms()
    atoms.numbers[0] = 19  # K: not in the model
    with pytest.raises(AdaScaleError, match=r"\[19\] unknown to this model"):
        AdaScaleCalculator(mixture).get_forces(atoms)


def test_a_long_range_model_that_has_run_can_still_be_deployed():
    """torch-pme keeps the last call's interpolation weights (a non-leaf tensor) on a PME model, which
    copy.deepcopy refuses; a Potential copies the model through its config and state_dict instead."""
    from adascale.models.inference import module_forces
    from adascale.models.long_range import LongRangePaiNN

    torch.manual_seed(0)
    branch = LongRangePaiNN(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=10.0, electrostatics="pme")
    frame = water_ion_frame(8, 1, 9.0, seed=2)
    before = Potential(branch, dtype="float64", skin=0.0).compute(frame.numbers, frame.positions, frame.cell, frame.pbc)
    module_forces(branch.eval(), [frame], name="long_range")  # the model has run
    potential = Potential(branch, dtype="float64", skin=0.0)
    assert potential.model is not branch and next(potential.model.parameters()).dtype == torch.float64
    after = potential.compute(frame.numbers, frame.positions, frame.cell, frame.pbc)
    np.testing.assert_allclose(after.forces, before.forces, rtol=1e-10, atol=1e-12)
