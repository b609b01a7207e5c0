"""MD inside OpenMM: the PythonForce is the calculator, SETTLE keeps water rigid and NVE conserves energy."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from adascale.deploy.calculator import AdaScaleCalculator
from adascale.deploy.openmm_engine import build_system, run_openmm
from adascale.deploy.potential import Potential
from adascale.deploy.rigid_water import whole_waters
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV
from models.branch_checks import water_ion_frame

pytestmark = pytest.mark.integration  # MD inside OpenMM


@pytest.mark.parametrize("periodic", [True, False])
def test_python_force_equals_the_calculator(mixture, periodic):
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1, periodic=periodic).to_atoms()
    if periodic:
        atoms.wrap()
    system, _, waters = build_system(atoms, Potential(mixture, dtype="float64"))
    assert len(waters) == 10 and system.getNumConstraints() == 30
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(whole_waters(atoms, waters) * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
    atoms.calc = AdaScaleCalculator(mixture, dtype="float64")
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=1e-6, atol=1e-9)


def _nve(mixture, timestep_fs: float, duration_fs: float = 20.0):
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1).to_atoms()
    atoms.wrap()  # as frames are stored: some waters split across the faces
    start = atoms.positions.copy()
    summary = run_openmm(
        atoms,
        Potential(mixture, dtype="float64"),
        steps=round(duration_fs / timestep_fs),
        timestep_fs=timestep_fs,
        temperature_K=300.0,
        seed=1,
    )
    return summary, atoms, start


def test_nve_with_settle_conserves_energy_and_keeps_water_rigid(mixture):
    """OpenMM's Verlet integrator with SETTLE on a potential keeps a shadow energy, so E_tot only
    fluctuates by O(dt^2): halving dt divides the fluctuation by ~4 (what is left is integration
    error, not a non-conservative force or a leaking constraint), and at 0.5 fs it stays below
    1e-3 eV/atom, 1/25 of kT at 300 K, on this deliberately rough random mixture."""
    coarse, atoms, start = _nve(mixture, 0.5)
    fine, _, _ = _nve(mixture, 0.25)
    assert coarse.steps == 40 and coarse.n_waters_rigid == 10
    assert coarse.max_deviation_ev_per_atom < 1e-3
    assert 3.0 < coarse.max_deviation_ev_per_atom / fine.max_deviation_ev_per_atom < 5.0
    pairs = atoms.constraints[0].pairs
    from ase.geometry import find_mic

    def lengths(positions):
        return np.linalg.norm(find_mic(positions[pairs[:, 0]] - positions[pairs[:, 1]], atoms.cell, True)[0], axis=1)

    np.testing.assert_allclose(lengths(atoms.positions), lengths(start), atol=1e-6)
    assert np.abs(atoms.positions - start).max() > 0.01  # it moved


def test_npt_reports_density_and_writes_dcd_and_state_data(tmp_path, mixture):
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1).to_atoms()
    summary = run_openmm(
        atoms,
        Potential(mixture),
        steps=6,
        timestep_fs=0.5,
        ensemble="npt",
        barostat_interval=2,
        trajectory=tmp_path / "md.dcd",
        log=tmp_path / "md.csv",
        interval=3,
        seed=2,
    )
    assert len(summary.time_ps) == 3 == len(summary.density)
    mass = atoms.get_masses().sum() * 1.66053906660e-24
    assert summary.density[0] == pytest.approx(mass / (8.5**3 * 1e-24), rel=1e-6)
    lines = (tmp_path / "md.csv").read_text().splitlines()
    assert "Density (g/mL)" in lines[0] and len(lines) == 3
    assert (tmp_path / "md.dcd").stat().st_size > 0
    with pytest.raises(AdaScaleError, match="NPT needs"):
        run_openmm(water_ion_frame(3, 1, 8.5, seed=2, periodic=False).to_atoms(), Potential(mixture), steps=1, ensemble="npt")


def test_md_command_runs_openmm_npt_from_a_run_directory(tmp_path, mixture):
    from typer.testing import CliRunner

    from adascale.cli import app
    from adascale.models.io import save_model

    save_model(tmp_path / "run" / "deployed", mixture)
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1).to_atoms()
    atoms.write(tmp_path / "start.extxyz")
    args = ["md", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "start.extxyz"), "--engine", "openmm"]
    args += ["--ensemble", "npt", "--steps", "10", "--timestep-fs", "0.5", "--interval", "1", "--threads", "1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "NPT, openmm" in result.output and "10 rigid waters" in result.output and "g/cm3" in result.output
    result = CliRunner().invoke(app, args[:2] + [str(tmp_path)] + args[3:])
    assert isinstance(result.exception, AdaScaleError) and "no deployed model" in str(result.exception)


def test_reading_energies_costs_no_extra_model_evaluation(mixture):
    """OpenMM's getState(getEnergy=True) evaluates the force at the positions the next step
    evaluates again: the PythonForce answers the second from its cache."""
    potential = Potential(mixture)
    calls = []
    compute = potential.compute
    potential.compute = lambda *args, **kwargs: calls.append(1) or compute(*args, **kwargs)
    run_openmm(water_ion_frame(10, 2, 8.5, seed=1).to_atoms(), potential, steps=6, timestep_fs=0.5, interval=1)
    assert len(calls) <= 6 + 2  # one per step, plus the start (energies read at 7 points)
