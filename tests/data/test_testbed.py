"""The OpenMM NaCl(aq) generator: labels equal OpenMM's own, seeding, replicas, caching, validation."""

import ase.units
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from adascale.data import testbed
from adascale.data.amoeba import frame_topology, whole_waters
from adascale.data.frames import read_frames
from adascale.data.testbed import NaClSettings, cache_path, generate_nacl
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV

TINY = dict(box_nm=1.95, stride_ps=0.02, equil_ps=0.2, seed=1, volume_levels=3, level_equil_ps=0.02)
BAR_PER_EV_A3 = 1e4 / ase.units.GPa  # ase.units.GPa is 1 GPa = 1e4 bar in eV/Å³; independent of adascale.units


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-frame testbed in a 1.95 nm box at volumes 0.94, 1.0, 1.06 V0 (a few seconds)."""
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
    assert pairs == 4  # 1.0 M in 1.95^3 nm^3 = 4.47 ion pairs
    assert numbers[-2 * pairs :].tolist() == [11] * pairs + [17] * pairs
    assert (numbers[: -2 * pairs].reshape(-1, 3) == [8, 1, 1]).all()
    info = frames[0].info
    assert info["gen_seed"] == 1 and info["gen_frames"] == 3 and info["gen_box_nm"] == 1.95
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
        (
            dict(box_nm=1.9),
            r"--box-nm 1\.9 is too small: the box must be at least 1\.93 nm, twice the 0\.9 nm PME cutoff.*0\.94 V",
        ),
        (dict(box_nm=1.85, volume_span=0.0), r"--box-nm 1\.85 is too small: the box must be at least 1\.89 nm"),
        (dict(volume_span=0.5), r"--volume-span must be in \[0, 0\.5\)"),
        (dict(volume_levels=1), r"--volume-levels must be at least 2 when --volume-span > 0"),
        (dict(level_equil_ps=-1.0), r"--level-equil-ps must not be negative"),
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


def _whole_and_centres(frame):
    """Positions (Å) with every water whole, and each atom's molecule centre (the geometric centre, as the barostat)."""
    whole = whole_waters(frame.positions, frame.numbers, frame.cell)
    centres = whole.copy()
    for o in np.flatnonzero(frame.numbers == 8):
        centres[o : o + 3] = whole[o : o + 3].mean(axis=0)
    return whole, centres


def test_frames_span_the_volume_levels_in_cycled_order(tiny):
    settings, _, frames = tiny
    volumes = np.array([abs(np.linalg.det(f.cell)) for f in frames])
    np.testing.assert_allclose(volumes / volumes[1], [0.94, 1.0, 1.06], rtol=1e-9)  # one equilibrated V0, scaled
    assert [f.info["volume_factor"] for f in frames] == [0.94, 1.0, 1.06]
    assert settings.cache_key() != NaClSettings(frames=3, **{**TINY, "volume_span": 0.0}).cache_key()
    old = NaClSettings(frames=2, **{**TINY, "volume_span": 0.0})
    assert old.volume_factors().tolist() == [1.0] and old.level_equil_steps == 0  # the single-volume sampling


def _spce_system(frame):
    topology = frame_topology(frame.numbers)
    topology.setPeriodicBoxVectors(frame.cell / 10 * unit.nanometer)
    return app.ForceField("amber14/spce.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, rigidWater=True
    )


def _float64_stress(frame, h: float) -> np.ndarray:
    """(3, 3) eV/Å³: central differences of the Reference platform's energy under symmetric strains ±h/2,
    each strained cell rotated back to OpenMM's reduced (lower-triangular) form."""
    context = openmm.Context(_spce_system(frame), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    whole, _ = _whole_and_centres(frame)

    def energy(strain):
        cell, positions = frame.cell @ (np.eye(3) + strain), whole @ (np.eye(3) + strain)
        q, r = np.linalg.qr(cell.T)
        q = q * np.sign(np.diag(r))  # a rotation taking the cell to lower-triangular rows
        context.setPeriodicBoxVectors(*np.tril(cell @ q / 10))
        context.setPositions(positions @ q / 10)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            strain = np.zeros((3, 3))
            strain[i, j] += h / 2
            strain[j, i] += h / 2
            stress[i, j] = stress[j, i] = (energy(strain) - energy(-strain)) / (2 * h)
    return stress * ase.units.kJ / ase.units.mol / abs(np.linalg.det(frame.cell))


def test_stress_labels_equal_a_float64_strain_derivative_with_another_step(tiny):
    """Reference platform (double precision), symmetric strains, step 2e-3 (the labels: CPU platform,
    lower-triangular deformations, 4e-3). Measured: at most 96 bar apart on components of ~35,000 bar; the
    tolerance, 1.5e-4 eV/Å³ (240 bar), is what the cutoff crossings allow."""
    _, _, frames = tiny
    for frame in frames:
        np.testing.assert_allclose(frame.stress, _float64_stress(frame, 2e-3), atol=1.5e-4)
        assert np.abs(frame.stress).max() > 0.01  # ~20,000-35,000 bar: the labels are not zeros


def test_molecular_pressure_from_the_labels_equals_openmms_barostat(tiny):
    """The barostat scales molecule centres; the atomic stress turns into that by adding (1/V) Σ (r_i - c_i) ⊗ F_i.
    With zero velocities computeCurrentPressure has no kinetic part. Measured: 16-122 bar apart over a 10,000 bar
    range across the three volumes (the barostat's own finite volume step sees other cutoff crossings)."""
    _, _, frames = tiny
    pressures = []
    for frame in frames:
        system = _spce_system(frame)
        barostat = openmm.MonteCarloBarostat(1.0 * unit.bar, 300.0 * unit.kelvin)
        system.addForce(barostat)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        whole, centres = _whole_and_centres(frame)
        context.setPeriodicBoxVectors(*(frame.cell / 10))
        context.setPositions(whole / 10)
        context.setVelocities(np.zeros_like(whole))
        expected = barostat.computeCurrentPressure(context).value_in_unit(unit.bar)
        molecular = frame.stress + np.einsum("ni,nj->ij", whole - centres, frame.forces) / abs(np.linalg.det(frame.cell))
        pressures.append(-np.trace(molecular) / 3 * BAR_PER_EV_A3)
        assert pressures[-1] == pytest.approx(expected, abs=250)
        dispersion = frame.info["REF_stress_dispersion"]
        np.testing.assert_allclose(dispersion, dispersion[0, 0] * np.eye(3))
        assert -150 < -dispersion[0, 0] * BAR_PER_EV_A3 < -100  # the tail correction lowers the pressure ~125 bar
    assert pressures[0] > pressures[1] > pressures[2]  # compressed boxes push outwards
