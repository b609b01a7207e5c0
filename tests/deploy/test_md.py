"""MD through ASE: rigid water exactly as ASE's FixBondLengths, NVE energy conservation, NVT, the md verb."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixBondLengths
from ase.geometry import find_mic
from ase.io import read, write
from typer.testing import CliRunner

import adascale
from adascale.cli import app
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.deploy.md import run_md
from adascale.deploy.rigid_water import find_waters
from adascale.errors import AdaScaleError
from adascale.models.io import save_model
from deploy.tiny_models import make_branches
from models.branch_checks import water_ion_frame

pytestmark = pytest.mark.integration  # MD through ASE


def test_rigid_water_is_exactly_ases_fix_bond_lengths():
    frame = water_ion_frame(12, 2, 8.5, seed=3, spacing_jitter=0.1)
    atoms = frame.to_atoms()
    atoms.wrap()  # some waters now straddle the cell faces: minimum images matter
    waters = find_waters(atoms)
    assert waters.shape == (12, 3) and (atoms.numbers[waters] == [8, 1, 1]).all()
    mine = adascale.RigidWater(atoms)
    reference = FixBondLengths(mine.pairs)
    rng = np.random.default_rng(0)
    moved = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
    ours, theirs = moved.copy(), moved.copy()
    mine.adjust_positions(atoms, ours)
    reference.adjust_positions(atoms, theirs)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    momenta = rng.normal(size=moved.shape)
    ours, theirs = momenta.copy(), momenta.copy()
    mine.adjust_momenta(atoms, ours)
    reference.adjust_momenta(atoms, theirs)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert mine.get_removed_dof(atoms) == 36


def test_find_waters_refuses_broken_water():
    atoms = water_ion_frame(4, 1, 8.5, seed=3, spacing_jitter=0.1).to_atoms()
    del atoms[1]  # the first water loses an H
    with pytest.raises(AdaScaleError, match="has 1 H"):
        find_waters(atoms)
    ions_only = water_ion_frame(0, 2, 8.5, seed=3).to_atoms()
    assert find_waters(ions_only).shape == (0, 3)


def _nve(mixture, mode: str, timestep_fs: float, duration_fs: float = 25.0):
    atoms = water_ion_frame(4, 1, 8.0, seed=1, periodic=False).to_atoms()
    summary = run_md(
        atoms,
        AdaScaleCalculator(mixture, mode=mode, dtype="float64"),
        steps=round(duration_fs / timestep_fs),
        timestep_fs=timestep_fs,
        temperature_K=300.0,
        seed=1,
    )
    return summary, atoms


def test_nve_conserves_energy_with_the_conservative_mixture_and_not_with_force_mixing(mixture):
    """Velocity Verlet on a potential keeps a shadow energy: E_tot only fluctuates, by O(dt^2).
    So (1) halving dt must divide the fluctuation by ~4: what is left is integration error,
    not a non-conservative force; (2) at 0.5 fs it stays below 1e-3 eV/atom, 1/25 of kT at
    300 K (measured: ~1e-4 on this deliberately rough random mixture at ~1000 K). Per-atom
    force mixing (same router) is not a gradient: its energy drifts whatever dt."""
    coarse, atoms = _nve(mixture, "conservative", 0.5)
    fine, _ = _nve(mixture, "conservative", 0.25)
    assert coarse.max_deviation_ev_per_atom < 1e-3
    assert 3.0 < coarse.max_deviation_ev_per_atom / fine.max_deviation_ev_per_atom < 5.0
    start = water_ion_frame(4, 1, 8.0, seed=1, periodic=False).positions
    pairs = atoms.constraints[0].pairs
    np.testing.assert_allclose(  # water stayed rigid
        np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1),
        np.linalg.norm(start[pairs[:, 0]] - start[pairs[:, 1]], axis=1),
        atol=1e-8,
    )
    mixing, _ = _nve(mixture, "force_mixing", 0.5)
    assert abs(mixing.drift_ev_per_atom_ps) > 30 * abs(coarse.drift_ev_per_atom_ps)
    assert mixing.max_deviation_ev_per_atom > 10 * coarse.max_deviation_ev_per_atom


def test_nvt_writes_trajectory_and_energy_log(tmp_path, mixture):
    atoms = water_ion_frame(4, 1, 8.0, seed=1, periodic=False).to_atoms()
    summary = run_md(
        atoms,
        AdaScaleCalculator(mixture),
        steps=10,
        timestep_fs=0.5,
        ensemble="nvt",
        temperature_K=300.0,
        trajectory=tmp_path / "md.traj",
        log=tmp_path / "md.log",
        interval=5,
        seed=2,
    )
    assert len(read(tmp_path / "md.traj", ":")) == 3 == len(summary.time_ps)
    lines = (tmp_path / "md.log").read_text().splitlines()
    assert "Etot" in lines[0] and len(lines) == 4
    np.testing.assert_allclose(summary.time_ps, [0.0, 0.0025, 0.005])
    with pytest.raises(AdaScaleError, match="ensemble"):
        run_md(atoms, AdaScaleCalculator(mixture), steps=1, ensemble="npt")


def test_md_command_runs_from_an_unlabelled_file(tmp_path, mixture):
    save_model(tmp_path / "mix", mixture)
    frames = [water_ion_frame(4, 1, 8.5, seed=s, spacing_jitter=0.1).to_atoms() for s in range(2)]
    for atoms in frames:
        atoms.arrays.pop("REF_forces", None)
        atoms.info.pop("REF_energy", None)
    write(tmp_path / "start.extxyz", frames)
    args = [
        "md",
        "--model",
        str(tmp_path / "mix"),
        "--data",
        str(tmp_path / "start.extxyz"),
        "--frame",
        "1",
        "--steps",
        "4",
        "--timestep-fs",
        "0.5",
        "--interval",
        "2",
        "--traj",
        str(tmp_path / "md.traj"),
        "--log",
        str(tmp_path / "md.log"),
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "eV/atom/ps" in result.output and "4 rigid waters" in result.output
    assert len(read(tmp_path / "md.traj", ":")) == 3
    result = CliRunner().invoke(app, args[:5] + ["--frame", "7"])
    assert isinstance(result.exception, AdaScaleError) and "out of range" in str(result.exception)


class Tethers(Calculator):
    """Each atom on a spring to its site, E = k/2 sum |r - r0|^2: canonical <E_kin> = 3N/2 kT exactly."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, sites: np.ndarray, k: float = 1.0) -> None:
        super().__init__()
        self.sites, self.k = sites, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        u = self.atoms.positions - self.sites
        self.results = {"energy": 0.5 * self.k * float((u * u).sum()), "forces": -self.k * u}


@pytest.mark.parametrize("target, seed", [(300.0, 0), (330.0, 1)])
def test_nvt_holds_the_requested_temperature(target, seed):
    """Mean kinetic temperature of a high-friction Langevin run within a derived bound of the target.

    N_dof = 3N = 300 (no constraints, fixcm off), so the instantaneous T is T chi2_N/N with
    relative std sqrt(2/N_dof) = 8.2 %. Friction 0.1/fs: momenta decorrelate as exp(-gamma t)
    and E_kin as exp(-2 gamma t); the tether (omega = sqrt(k/m) = 0.016/fs << gamma) adds a
    slow momentum component of relative weight (omega/gamma)^2 ~ 2 %. Frames 20 fs = 2/gamma
    apart are then nearly independent (measured lag-1 correlation 0.03-0.09), so the mean of
    M = 197 frames after a 100 fs (10/gamma) burn-in has relative std sqrt(2/N_dof/M) = 0.58 %;
    the bound is 4 such sigmas, doubled in variance for the residual correlation: 3.3 %. The
    integrator's own bias at gamma dt = 0.2 measured < 1 %. 300 K against 330 K differ by 10 %,
    a 10x temperature by 900 %. The first frame (Maxwell-Boltzmann draw) must sit within
    4 sqrt(2/N_dof) = 33 % of the target too."""
    n, n_dof = 100, 300
    sites = np.random.default_rng(seed).uniform(0.0, 10.0, (n, 3))
    atoms = Atoms(f"Ar{n}", positions=sites, cell=[10.0, 10.0, 10.0], pbc=True)
    summary = run_md(
        atoms,
        Tethers(sites),
        steps=2010,
        timestep_fs=2.0,
        ensemble="nvt",
        temperature_K=target,
        friction_per_fs=0.1,
        rigid_water=False,
        interval=10,
        seed=seed,
    )
    sampled = summary.temperature[5:]
    assert sampled.size == 197
    sigma = np.sqrt(2.0 / n_dof / sampled.size) * np.sqrt(2.0)
    assert abs(sampled.mean() / target - 1.0) < 4.0 * sigma
    assert abs(summary.temperature[0] / target - 1.0) < 4.0 * np.sqrt(2.0 / n_dof)


def _straddling_box():
    """10 rigid waters and 2 ion pairs in an 8.5 Å box, grid sites moved onto the cell faces and wrapped."""
    atoms = water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1).to_atoms()
    atoms.positions -= 8.5 / 3 / 2
    atoms.wrap()
    return atoms


def test_nve_conserves_energy_in_a_periodic_box_with_waters_across_the_faces():
    """A periodic box where half the waters are split by the cell faces (their O-H vectors are
    only right as minimum images) and atoms leave the cell during the run (ASE does not wrap).
    A local branch (smooth, conservative) under velocity Verlet + RATTLE keeps a shadow energy:
    E_tot fluctuates by O(dt^2), so halving dt divides the fluctuation by ~4 (measured 4.0),
    and at 0.5 fs it stays below 1e-6 eV/atom (measured 5.6e-8 over 10 fs). float64: in float32
    the 0.25 fs run sat on a rounding floor (2.5e-8 eV/atom, ratio 2.6). A constraint or a
    calculator that mishandles the faces breaks the water or jumps the energy."""
    atoms = _straddling_box()
    waters = find_waters(atoms)
    raw = np.linalg.norm(atoms.positions[waters[:, [0, 0, 1]]] - atoms.positions[waters[:, [1, 2, 2]]], axis=-1)
    assert (raw > 2.0).any(axis=1).sum() >= 3  # waters split by the faces
    runs = {}
    for dt in (0.5, 0.25):
        atoms = _straddling_box()
        summary = run_md(
            atoms, AdaScaleCalculator(make_branches()[0], dtype="float64"), steps=round(10.0 / dt), timestep_fs=dt, seed=1
        )
        runs[dt] = (summary, atoms)
    coarse, atoms = runs[0.5]
    assert coarse.n_waters_rigid == 10
    fractional = atoms.get_scaled_positions(wrap=False)
    assert ((fractional < 0) | (fractional >= 1)).any()  # some atom crossed a face during the run
    assert coarse.max_deviation_ev_per_atom < 1e-6
    assert 3.0 < coarse.max_deviation_ev_per_atom / runs[0.25][0].max_deviation_ev_per_atom < 5.0
    start = _straddling_box()
    pairs = atoms.constraints[0].pairs
    np.testing.assert_allclose(  # water stayed rigid, measured as minimum images
        [atoms.get_distance(a, b, mic=True) for a, b in pairs],
        [start.get_distance(a, b, mic=True) for a, b in pairs],
        atol=1e-8,
    )


def test_rigid_water_survives_slicing():
    atoms = water_ion_frame(4, 1, 8.5, seed=1).to_atoms()
    atoms.set_constraint(adascale.RigidWater(atoms))
    part = atoms[[0, 1, 2, 6, 7, 8, 12]]  # waters 0 and 2 and the Na; slicing re-indexes the constraint
    (constraint,) = part.constraints
    np.testing.assert_array_equal(constraint.waters, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_allclose(constraint.bondlengths, adascale.RigidWater(part).bondlengths, atol=1e-12)


def test_import_adascale_stays_light():
    import subprocess
    import sys

    code = "import adascale, sys; adascale.RigidWater; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # RigidWater needs numpy and ASE only


def test_rigid_water_projects_float32_forces_where_fix_bond_lengths_cannot():
    """MACE's calculator returns float32 forces: FixBondLengths' 1e-13 tolerance is out of reach in
    float32 and it raises; RigidWater projects them in float64 and writes the result back."""
    atoms = water_ion_frame(12, 2, 8.5, seed=3, spacing_jitter=0.1).to_atoms()
    atoms.wrap()
    forces = np.random.default_rng(1).normal(scale=0.5, size=atoms.positions.shape)
    mine = adascale.RigidWater(atoms)
    with pytest.raises(RuntimeError, match="Did not converge"):
        FixBondLengths(mine.pairs).adjust_forces(atoms, forces.astype(np.float32))
    exact, single = forces.copy(), forces.astype(np.float32)
    mine.adjust_forces(atoms, exact)
    mine.adjust_forces(atoms, single)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, exact, atol=1e-6)
    a, b = mine.pairs.T
    bonds = find_mic(atoms.positions[a] - atoms.positions[b], atoms.cell, atoms.pbc)[0]
    masses = atoms.get_masses()[:, None]
    rate = np.einsum("pc,pc->p", exact[a] / masses[a] - exact[b] / masses[b], bonds)
    assert np.abs(rate).max() < 1e-10  # the projected accelerations keep every bond length fixed
