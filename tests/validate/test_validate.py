"""`adascale validate`: the reference against an independent OpenMM run, the model's forces, collapses, bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
from openmm import unit
from typer.testing import CliRunner

from adascale.cli import app as cli_app
from adascale.data.frames import read_frames, write_frames
from adascale.data.testbed import NaClSettings, generate_nacl
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.deploy.potential import Potential
from adascale.errors import AdaScaleError
from adascale.models.io import save_model
from adascale.models.painn import PaiNN
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV
from adascale.validate import settings_from, validate_potential
from adascale.validate import simulate as simulate_module
from adascale.validate.core import check_start, model_system, reference_runs
from deploy.tiny_models import make_branches

#: A protocol of a few hundred steps (the physics checks below use a longer NPT).
TINY = [
    "protocol.npt_equil_ps=0.1",
    "protocol.npt_prod_ps=0.4",
    "protocol.nvt_equil_ps=0.1",
    "protocol.nvt_prod_ps=0.4",
    "protocol.sample_ps=0.02",
    "protocol.window_ps=0.2",
    "threads=1",
]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """One testbed frame in a 1.9 nm box (the smallest the reference's PME allows) and a shared reference cache."""
    root = tmp_path_factory.mktemp("validate")
    settings = NaClSettings(frames=1, box_nm=1.9, stride_ps=0.02, equil_ps=0.2, seed=1, volume_span=0.0)
    path = generate_nacl(settings, root / "start.extxyz", cache_dir=root / "testbed", threads=1, progress=False)
    return SimpleNamespace(root=root, path=path, frame=read_frames(path)[0], cache=root / "cache")


def _independent_npt_density(frame, seed: int, equil_ps: float, prod_ps: float) -> tuple[float, float]:
    """Mean and 5-block standard error of the NPT density of the testbed force field, written from scratch."""
    topology = app.Topology()
    chain = topology.addChain()
    atoms = []
    residue = None
    for number in frame.numbers:
        element = app.Element.getByAtomicNumber(int(number))
        if number != 1 or residue is None:  # a new residue at each O and each ion
            residue = topology.addResidue("HOH" if number == 8 else element.symbol.upper(), chain)
        atoms.append(topology.addAtom(element.symbol, element, residue))
        if number == 1:
            topology.addBond(atoms[-1], next(a for a in residue.atoms() if a.element.atomic_number == 8))
    box_nm = np.asarray(frame.cell) / 10.0
    topology.setPeriodicBoxVectors(box_nm * unit.nanometer)
    system = app.ForceField("amber14/spce.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, rigidWater=True
    )
    system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, 300 * unit.kelvin, 25))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    positions = frame.positions.copy()
    for o in np.flatnonzero(frame.numbers == 8):  # whole waters: H beside their O
        positions[o + 1 : o + 3] -= np.round((positions[o + 1 : o + 3] - positions[o]) / np.diag(frame.cell)) * np.diag(
            frame.cell
        )
    context.setPositions(positions / 10.0)
    context.applyConstraints(1e-8)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(round(equil_ps / 0.002))
    mass = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())) * 1.66053906660e-24
    densities = []
    for _ in range(round(prod_ps / 0.1)):
        integrator.step(50)
        densities.append(mass / (context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer**3) * 1e-21))
    means = [block.mean() for block in np.array_split(np.array(densities), 5)]
    return float(np.mean(densities)), float(np.std(means, ddof=1) / np.sqrt(5))


def test_reference_density_agrees_with_an_independent_openmm_run_and_is_cached(testbed, monkeypatch):
    settings = settings_from(["protocol.npt_equil_ps=1", "protocol.npt_prod_ps=3", *TINY[2:]])
    start = check_start(testbed.frame, settings)
    runs = reference_runs(start, settings, testbed.root / "npt-cache")
    production = runs["npt_density"][runs["npt_time_ps"] >= 1.0 - 1e-9]
    means = [block.mean() for block in np.array_split(production, 5)]
    mean, sem = production.mean(), np.std(means, ddof=1) / np.sqrt(5)
    other, other_sem = _independent_npt_density(testbed.frame, seed=7, equil_ps=1.0, prod_ps=3.0)
    assert 0.9 < mean < 1.2 and 0 < sem < 0.03
    assert abs(mean - other) < 3 * np.hypot(sem, other_sem)
    assert runs["nvt_positions"].shape[1:] == (len(testbed.frame.numbers), 3)

    def no_md(*args, **kwargs):
        raise AssertionError("the reference ran again despite its cache")

    monkeypatch.setattr("adascale.validate.core.run_phase", no_md)
    again = reference_runs(start, settings, testbed.root / "npt-cache")
    np.testing.assert_array_equal(again["npt_density"], runs["npt_density"])


def test_the_model_runs_with_the_calculators_forces(testbed):
    settings = settings_from(TINY)
    start = check_start(testbed.frame, settings)
    branch = make_branches()[0]
    system, _ = model_system(start, Potential(branch, dtype="float64"))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(start.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    atoms = start.atoms.copy()
    atoms.positions = start.positions
    atoms.calc = AdaScaleCalculator(branch, dtype="float64")
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=1e-6, atol=1e-9)
    assert system.getNumConstraints() == 3 * len(start.waters)


class WrongSign:
    """The reference force field with its energy and forces negated: like charges attract, atoms overlap."""

    def __init__(self, start) -> None:
        system, _ = simulate_module.reference_system(start.atoms, start.waters)
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))

    def compute(self, numbers, positions, cell, pbc):
        self.context.setPeriodicBoxVectors(*(np.asarray(cell) * 0.1))
        self.context.setPositions(positions * 0.1)
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
        return SimpleNamespace(energy=-energy, forces=-np.asarray(forces))


def test_a_wrong_signed_potential_is_reported_with_its_time_to_collapse(testbed):
    settings = settings_from(TINY)
    start = check_start(testbed.frame, settings)
    report = validate_potential(WrongSign(start), start, settings, testbed.cache)
    stability = report["stability"]
    assert stability["collapsed"] and stability["phase"] == "npt"
    assert 0 < stability["time_ps"] < 0.5
    assert "approach" in stability["criterion"] or "failed" in stability["criterion"]
    assert report["density"]["model"]["mean"] is None and report["density"]["reference"]["mean"] > 0.8
    json.dumps(report, allow_nan=False)  # a complete, strict-JSON report, not a traceback


def test_a_collapse_criterion_is_recorded_and_the_run_goes_on(testbed):
    """An approach criterion marks the first collapse but the MD continues, so its observables are still measured."""
    settings = settings_from(TINY)
    start = check_start(testbed.frame, settings)
    system, topology = simulate_module.reference_system(start.atoms, start.waters)
    calls = []

    def check(xyz, lengths):
        calls.append(1)
        return "planted" if len(calls) in (3, 5) else None

    trace = simulate_module.run_phase(
        system, topology, start.positions, start.velocities, start.box, settings,
        npt=False, steps=100, keep_positions=False, check=check, catch=True,
    )  # fmt: skip
    assert trace.collapse == "planted" and trace.collapse_ps == pytest.approx(2 * settings.protocol.sample_ps)
    assert not trace.failed and len(trace.time_ps) == 100 // settings.protocol.sample_steps + 1


def _run_dir(tmp_path, testbed, branch) -> str:
    run = tmp_path / "run"
    save_model(run / "deployed", branch)
    (run / "data").mkdir(parents=True)
    (run / "data" / "test.extxyz").write_bytes(testbed.path.read_bytes())
    return str(run)


def _invoke(*args: str):
    return CliRunner().invoke(cli_app, ["validate", *args], env={"COLUMNS": "200"})


def test_validate_command_writes_the_report_files(tmp_path, testbed):
    torch.manual_seed(0)
    run = _run_dir(tmp_path, testbed, make_branches()[0].float())
    out = tmp_path / "out"
    sets = [f"--set={item}" for item in TINY]
    result = _invoke("--run", run, "--out", str(out), "--cache-dir", str(testbed.cache), *sets)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "validate.json").read_text())
    assert set(report) >= {"state", "protocol", "density", "rdf", "diffusion", "stability"}
    assert report["state"]["temperature_K"] == 300.0 and report["state"]["atoms"] == len(testbed.frame.numbers)
    assert {"timestep_fs", "equil_ps", "prod_ps", "seed"} <= set(report["protocol"])
    assert set(report["rdf"]) == {"O-O", "O-H", "H-H", "Na-O", "Cl-O", "Na-Cl"}
    assert all(block["r_max_A"] == 6.0 for block in report["rdf"].values())
    assert set(report["density"]) == {"model", "reference", "ratio"}
    assert set(report["stability"]) >= {"collapsed", "time_ps", "criterion"}
    worst = report["stability"]["worst_window"]  # every 0.2 ps window of the 0.5 ps NVT run is scored
    assert worst["pair"] in {"O-O", "O-H", "H-H"} and worst["error"] > 0 and 0.5 <= worst["time_ps"] < 1.0
    assert "largest water-RDF error" in (out / "validate.md").read_text()
    assert report["diffusion"]["reference"]["mean"] > 0
    assert "| NPT density" in (out / "validate.md").read_text()
    assert all((out / f"validate_{name}.png").stat().st_size > 0 for name in ("rdf", "density", "msd"))


@pytest.mark.parametrize("case", ["no_deployed", "species", "no_cell", "too_short"])
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, testbed, case):
    out = tmp_path / "out"
    args = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), *[f"--set={item}" for item in TINY]]
    if case == "no_deployed":
        args += ["--run", str(tmp_path)]
        expected = "no deployed model"
    elif case == "species":
        water_only = PaiNN((1, 8), cutoff=3.0, features=8, interactions=1, average_neighbours=10.0)
        save_model(tmp_path / "water", water_only)
        args += ["--model", str(tmp_path / "water"), "--data", str(testbed.path)]
        expected = "the model knows atomic numbers [1, 8]"
    elif case == "no_cell":
        frame = testbed.frame
        frame.pbc = np.zeros(3, bool)
        write_frames(tmp_path / "molecule.extxyz", [frame])
        frame.pbc = np.ones(3, bool)
        args += ["--run", _run_dir(tmp_path, testbed, make_branches()[0]), "--data", str(tmp_path / "molecule.extxyz")]
        expected = "no periodic cell"
    else:
        args += ["--run", _run_dir(tmp_path, testbed, make_branches()[0]), "--set", "protocol.npt_prod_ps=0.05"]
        expected = "too few"
    result = _invoke(*args)
    assert isinstance(result.exception, AdaScaleError), result.output
    message = str(result.exception)
    assert expected in message and "\n" not in message
    assert not out.exists() and not (tmp_path / "cache").exists()
