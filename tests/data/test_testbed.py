"""The OpenMM NaCl(aq) generator: labels equal OpenMM's own, seeding, replicas, caching, validation."""

import ase.units
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from adascale.data import testbed
from adascale.data.frames import read_frames
from adascale.data.testbed import NaClSettings, cache_path, generate_nacl
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV

TINY = dict(box_nm=1.9, stride_ps=0.02, equil_ps=0.2, seed=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-frame testbed in a 1.9 nm box (a few seconds)."""
    root = tmp_path_factory.mktemp("testbed")
    settings = NaClSettings(frames=3, **TINY)
    out = generate_nacl(settings, root / "tiny.extxyz", cache_dir=root / "cache", threads=1, progress=False)
    return settings, root, read_frames(out)


def _openmm_labels(frame):
    """Forces (kJ/mol/nm) and energy (kJ/mol) from a fresh OpenMM system built from the stored frame alone."""
    topology = app.Topology()
    chain = topology.addChain()
    k = 0
    while k < len(frame):
        if frame.numbers[k] == 8:  # water: O, H, H
            assert frame.numbers[k + 1 : k + 3].tolist() == [1, 1]
            residue = topology.addResidue("HOH", chain)
            o, h1, h2 = (
                topology.addAtom(n, e, residue)
                for n, e in (("O", app.element.oxygen), ("H1", app.element.hydrogen), ("H2", app.element.hydrogen))
            )
            topology.addBond(o, h1)
            topology.addBond(o, h2)
            k += 3
        else:
            element = app.element.Element.getByAtomicNumber(int(frame.numbers[k]))
            topology.addAtom(element.symbol.upper(), element, topology.addResidue(element.symbol.upper(), chain))
            k += 1
    topology.setPeriodicBoxVectors(frame.cell / 10 * unit.nanometer)
    system = app.ForceField("amber14/spce.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, rigidWater=True
    )
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setExceptionsUsePeriodicBoundaryConditions(True)  # stored molecules may straddle the cell faces
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(frame.positions / 10 * unit.nanometer)
    state = context.getState(getForces=True, getEnergy=True)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return np.asarray(forces), state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.mark.integration  # OpenMM simulation (the tiny fixture)
def test_stored_labels_equal_openmm_recomputed_from_the_stored_positions(tiny):
    _, _, frames = tiny
    kj_mol_in_ev = ase.units.kJ / ase.units.mol  # independent of adascale.units
    for frame in frames:
        forces, energy = _openmm_labels(frame)
        np.testing.assert_allclose(frame.forces, forces * kj_mol_in_ev / ase.units.nm, atol=2e-5, rtol=1e-7)  # eV/Å
        np.testing.assert_allclose(frame.forces * KJ_MOL_NM_PER_EV_A, forces, atol=0.02)  # back in kJ/mol/nm
        assert frame.energy == pytest.approx(energy * kj_mol_in_ev, abs=1e-4)
        assert frame.energy * KJ_MOL_PER_EV == pytest.approx(energy, abs=1e-2)
        assert np.abs(frame.forces).mean() > 0.1  # real intermolecular forces, not zeros


@pytest.mark.integration  # OpenMM simulation (the tiny fixture)
def test_frames_are_wrapped_and_some_molecules_straddle_the_faces(tiny):
    _, _, frames = tiny
    for frame in frames:
        fractional = frame.positions @ np.linalg.inv(frame.cell)
        assert (fractional >= 0).all() and (fractional < 1).all()
        assert frame.pbc.all() and np.allclose(frame.cell, np.diag(np.diag(frame.cell)))
    oxygens = np.flatnonzero(frames[0].numbers == 8)
    oh = np.linalg.norm(frames[0].positions[oxygens + 1] - frames[0].positions[oxygens], axis=1)
    assert (oh > 5).any()  # split across a face: the recompute test above covers that case
    assert np.allclose(np.sort(oh)[:10], 1.0, atol=1e-6)  # whole molecules keep the rigid SPC/E O-H length


@pytest.mark.integration  # OpenMM simulation (the tiny fixture)
def test_composition_and_recorded_settings(tiny):
    settings, _, frames = tiny
    numbers = frames[0].numbers
    pairs = settings.ion_pairs
    assert pairs == 4  # 1.0 M in 1.9^3 nm^3 = 4.13 ion pairs
    assert numbers[-2 * pairs :].tolist() == [11] * pairs + [17] * pairs
    assert (numbers[: -2 * pairs].reshape(-1, 3) == [8, 1, 1]).all()
    info = frames[0].info
    assert info["gen_seed"] == 1 and info["gen_frames"] == 3 and info["gen_box_nm"] == 1.9
    assert info["gen_forcefield"] == "amber14/spce.xml" and info["gen_ion_pairs"] == pairs


def test_default_box_holds_five_ion_pairs():
    assert NaClSettings().ion_pairs == 5


@pytest.mark.integration  # OpenMM simulation (the tiny fixture)
def test_repeat_call_comes_from_the_cache(tiny, monkeypatch):
    settings, root, _ = tiny

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated again despite a cached result")

    monkeypatch.setattr(testbed, "_simulate", no_simulation)
    again = generate_nacl(settings, root / "again.extxyz", cache_dir=root / "cache", progress=False)
    assert again.read_bytes() == (root / "tiny.extxyz").read_bytes() == cache_path(settings, root / "cache").read_bytes()
    assert cache_path(NaClSettings(frames=3, **{**TINY, "seed": 2}), root / "cache") != cache_path(settings, root / "cache")


@pytest.mark.integration  # OpenMM simulation (the tiny fixture)
def test_replicas_run_in_parallel_processes_with_their_own_seeds(tiny, tmp_path):
    settings, _, single = tiny
    out = generate_nacl(
        NaClSettings(frames=5, replicas=2, **TINY), tmp_path / "r.extxyz", cache_dir=tmp_path, threads=2, progress=False
    )
    frames = read_frames(out)
    assert len(frames) == 5
    # Replica 0 is seeded exactly like a single run with the same --seed (same threads): bit-identical frames.
    for a, b in zip(frames[:3], single):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.forces, b.forces)
    # Replica 1 is an independent trajectory (other ion placement, velocities, noise).
    assert not np.allclose(frames[3].positions, frames[0].positions, atol=1.0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(box_nm=1.85), r"--box-nm 1\.85 is too small: the box must be at least 1\.89 nm, twice the 0\.9 nm PME cutoff"),
        (dict(frames=0), r"--frames must be at least 1"),
        (dict(molar=0.1), r"--molar 0\.1 in a 2 nm box gives no ion pair"),
        (dict(molar=-1.0), r"gives no ion pair"),
        (dict(stride_ps=0.0005), r"--stride-ps must be at least one 0\.002 ps time step"),
        (dict(equil_ps=-1.0), r"--equil-ps must not be negative"),
        (dict(temperature=0.0), r"--temperature must be positive"),
        (dict(replicas=4, frames=3), r"--replicas must be between 1 and --frames \(3\)"),
    ],
)
def test_invalid_settings_fail_before_any_simulation(changes, match):
    with pytest.raises(AdaScaleError, match=match):
        NaClSettings(**changes)


def test_too_many_ions_for_the_water_fail_before_the_simulation():
    settings = NaClSettings(molar=40.0, equil_ps=0)
    with pytest.raises(AdaScaleError, match=r"--molar 40 needs 386 ions but the box holds only 256 waters"):
        testbed._solvated(settings, np.random.default_rng(0))


def test_unit_constants_agree_with_openmm_and_codata():
    ev_in_kj_mol = (1 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
    assert KJ_MOL_PER_EV == pytest.approx(ev_in_kj_mol, rel=1e-9)
    assert KJ_MOL_NM_PER_EV_A == pytest.approx(964.853, abs=5e-4)  # DESIGN §5
