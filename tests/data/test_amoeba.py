"""AMOEBA labels of the sampled testbed: equal to an independent OpenMM recompute from the written positions."""

import ase.units
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from adascale.data.amoeba import whole_waters
from adascale.data.frames import read_frames
from adascale.data.testbed import NaClSettings, cache_path, generate_nacl
from adascale.errors import AdaScaleError

TINY = dict(frames=2, box_nm=1.9, stride_ps=0.02, equil_ps=0.2, seed=1, volume_span=0.0)  # one volume: fast


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The same 2 sampled frames (1.9 nm box, 626 atoms) with SPC/E and with AMOEBA labels (~2 s)."""
    root = tmp_path_factory.mktemp("amoeba")
    spce = generate_nacl(NaClSettings(**TINY), root / "spce.extxyz", cache_dir=root, threads=1, progress=False)
    amoeba = generate_nacl(
        NaClSettings(**TINY, labels="amoeba"), root / "amoeba.extxyz", cache_dir=root, threads=1, progress=False
    )
    return root, read_frames(spce), read_frames(amoeba)


def _topology(numbers):
    topology = app.Topology()
    chain = topology.addChain()
    for k, z in enumerate(numbers):
        if z == 8:
            residue = topology.addResidue("HOH", chain)
            o = topology.addAtom("O", app.element.oxygen, residue)
            topology.addBond(o, topology.addAtom("H1", app.element.hydrogen, residue))
            topology.addBond(o, topology.addAtom("H2", app.element.hydrogen, residue))
        elif z != 1:
            symbol = {11: "NA", 17: "CL"}[int(z)]
            topology.addAtom(symbol, app.element.Element.getByAtomicNumber(int(z)), topology.addResidue(symbol, chain))
        assert z != 1 or numbers[k - 1] in (8, 1)
    return topology


def _recompute(frame, positions_nm, epsilon=1e-6):
    """AMOEBA multipole + vdW forces (kJ/mol/nm) and energy (kJ/mol), built from the frame alone."""
    topology = _topology(frame.numbers)
    topology.setPeriodicBoxVectors(frame.cell / 10 * unit.nanometer)
    system = app.ForceField("amoeba2018.xml").createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=0.9 * unit.nanometer,
        vdwCutoff=0.9 * unit.nanometer,
        polarization="mutual",
        mutualInducedTargetEpsilon=epsilon,
    )
    for index in reversed(range(system.getNumForces())):  # the bonded terms' set-up alone takes ~10 s
        if not isinstance(system.getForce(index), openmm.AmoebaMultipoleForce | openmm.AmoebaVdwForce):
            system.removeForce(index)
    for force in system.getForces():
        force.setForceGroup(5)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    state = context.getState(getForces=True, getEnergy=True, groups={5})
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return np.asarray(forces), state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _whole_and_shifted(frame, rng):
    """Positions (nm) with each water made whole around its first H, then moved by a random lattice vector."""
    x = frame.positions.copy()
    inverse = np.linalg.inv(frame.cell)
    for o in np.flatnonzero(frame.numbers == 8):
        for atom in (o, o + 2):
            d = (x[atom] - x[o + 1]) @ inverse
            x[atom] = x[o + 1] + (d - np.round(d)) @ frame.cell
        x[o : o + 3] += rng.integers(-1, 2, 3) @ frame.cell
    return x / 10


@pytest.mark.integration  # OpenMM simulation and AMOEBA labels (the labelled fixture)
def test_amoeba_labels_equal_an_independent_recompute_from_the_written_positions(labelled):
    _, _, frames = labelled
    ev_per_kj_mol = ase.units.kJ / ase.units.mol
    rng = np.random.default_rng(0)
    for frame in frames:
        forces, energy = _recompute(frame, _whole_and_shifted(frame, rng))
        np.testing.assert_allclose(frame.forces / ev_per_kj_mol * ase.units.nm, forces, atol=0.5, rtol=1e-4)  # kJ/mol/nm
        assert frame.energy / ev_per_kj_mol == pytest.approx(energy, abs=0.05)
        assert np.abs(forces).mean() > 100  # real intermolecular forces, kJ/mol/nm


@pytest.mark.integration  # OpenMM simulation and AMOEBA labels (the labelled fixture)
def test_split_molecules_need_the_whole_molecule_positions(labelled):
    _, _, frames = labelled
    frame = frames[0]
    oxygens = np.flatnonzero(frame.numbers == 8)
    assert (np.linalg.norm(frame.positions[oxygens + 1] - frame.positions[oxygens], axis=1) > 5).any()  # split waters
    naive, _ = _recompute(frame, frame.positions / 10)  # OpenMM on the wrapped positions as written
    assert np.abs(naive - frame.forces / (ase.units.kJ / ase.units.mol) * ase.units.nm).max() > 1e3
    whole = whole_waters(frame.positions, frame.numbers, frame.cell)
    np.testing.assert_allclose(np.linalg.norm(whole[oxygens + 1] - whole[oxygens], axis=1), 1.0, atol=1e-6)


@pytest.mark.integration  # OpenMM simulation and AMOEBA labels (the labelled fixture)
def test_same_configurations_other_labels_and_recorded_settings(labelled):
    root, spce, amoeba = labelled
    for a, b in zip(spce, amoeba):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell, b.cell)
        assert np.abs(a.forces - b.forces).mean() > 0.05  # eV/Å: a different reference
    info = amoeba[0].info
    assert info["gen_labels"] == "amoeba" and info["gen_label_forcefield"] == "amoeba2018.xml"
    assert info["gen_label_terms"] == "AmoebaMultipoleForce+AmoebaVdwForce" and info["gen_label_polarization"] == "mutual"
    assert info["gen_label_pme_cutoff_nm"] == 0.9 and info["gen_label_mutual_epsilon"] <= 1e-5
    assert spce[0].info["gen_labels"] == "spce" and "gen_label_forcefield" not in spce[0].info
    spce_cache = cache_path(NaClSettings(**TINY), root)
    assert cache_path(NaClSettings(**TINY, labels="amoeba"), root).name == spce_cache.name.replace(".extxyz", "-amoeba1.extxyz")


def test_unknown_labels_are_refused():
    with pytest.raises(AdaScaleError, match=r"--labels must be one of spce, amoeba, got 'mbpol'"):
        NaClSettings(labels="mbpol")
