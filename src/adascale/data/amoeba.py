"""Polarizable labels for sampled water + ion frames: OpenMM's AMOEBA (``amoeba2018.xml``).

The configurations come from the SPC/E testbed (rigid water); only the label changes. The
label is the force and energy of ``AmoebaMultipoleForce`` (permanent multipoles and mutual
induced dipoles, PME) and ``AmoebaVdwForce`` (buffered 14-7): the non-bonded and polarization
terms. Water stays rigid at SPC/E geometry, so AMOEBA's bonded terms (fitted to its own
flexible water) would add intramolecular forces that a rigid water never feels: they are
left out of the system (which also cuts the context's set-up from ~11 s to ~1 s), and the two
terms sit in their own force groups, the only ones the labels ask for.

Frames store positions wrapped atom by atom, so a water may be split across the cell faces.
AMOEBA's multipoles use local frames built from each molecule's own atoms and covalent maps
that scale intramolecular polarization; OpenMM computes them from the raw coordinates, so a
split molecule gets a wrong frame (measured: -14,802 kJ/mol whole, +604,402 kJ/mol split for
the same 748-atom configuration). Each molecule is therefore made whole (hydrogens moved by
lattice vectors next to their oxygen) before labelling; forces are invariant to that, so the
frames keep their wrapped positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adascale.data.frames import Frame
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV

AMOEBA_FORCEFIELD = "amoeba2018.xml"
AMOEBA_PME_CUTOFF_NM = 0.9  # the SPC/E labels' real-space cutoff; also the vdW cutoff
AMOEBA_POLARIZATION = "mutual"
AMOEBA_MUTUAL_EPSILON = 1e-5  # mutualInducedTargetEpsilon: RMS change of the induced dipoles, Debye
AMOEBA_TERMS = ("AmoebaMultipoleForce", "AmoebaVdwForce")
#: Bump whenever a change here would change the labels (invalidates cached AMOEBA testbeds).
AMOEBA_LABEL_VERSION = 1
_LABEL_GROUPS = {1, 2}  # force groups of the two labelled terms


def frame_topology(numbers: np.ndarray):
    """OpenMM topology of a frame laid out as water O, H, H triples followed by single-atom ions."""
    import openmm.app as app

    topology = app.Topology()
    chain = topology.addChain()
    k = 0
    while k < len(numbers):
        if numbers[k] == 8:
            if numbers[k + 1 : k + 3].tolist() != [1, 1]:
                raise AdaScaleError(f"atom {k}: an oxygen must be followed by its two hydrogens (water as O, H, H)")
            residue = topology.addResidue("HOH", chain)
            oxygen = topology.addAtom("O", app.element.oxygen, residue)
            for name in ("H1", "H2"):
                topology.addBond(oxygen, topology.addAtom(name, app.element.hydrogen, residue))
            k += 3
        else:
            element = app.element.Element.getByAtomicNumber(int(numbers[k]))
            topology.addAtom(element.symbol.upper(), element, topology.addResidue(element.symbol.upper(), chain))
            k += 1
    return topology


def whole_waters(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """(n, 3) positions (units of ``cell``) with each water's hydrogens moved next to its oxygen by lattice vectors."""
    whole = np.array(positions, dtype=float)
    inverse = np.linalg.inv(cell)
    oxygens = np.flatnonzero(numbers == 8)
    for offset in (1, 2):
        delta = (whole[oxygens + offset] - whole[oxygens]) @ inverse
        whole[oxygens + offset] = whole[oxygens] + (delta - np.round(delta)) @ cell
    return whole


class AmoebaLabeller:
    """One OpenMM context for a fixed composition; :meth:`label` relabels frames of that composition."""

    def __init__(self, numbers: np.ndarray, cell: np.ndarray, threads: int = 1) -> None:
        import openmm
        import openmm.app as app
        import openmm.unit as unit

        self.numbers = np.asarray(numbers)
        topology = frame_topology(self.numbers)
        topology.setPeriodicBoxVectors(np.asarray(cell) / 10 * unit.nanometer)
        system = app.ForceField(AMOEBA_FORCEFIELD).createSystem(
            topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=AMOEBA_PME_CUTOFF_NM * unit.nanometer,
            vdwCutoff=AMOEBA_PME_CUTOFF_NM * unit.nanometer,
            polarization=AMOEBA_POLARIZATION,
            mutualInducedTargetEpsilon=AMOEBA_MUTUAL_EPSILON,
        )
        for index in reversed(range(system.getNumForces())):
            if type(system.getForce(index)).__name__ not in AMOEBA_TERMS:
                system.removeForce(index)
        labelled = {type(force).__name__: force for force in system.getForces()}
        for name, group in zip(AMOEBA_TERMS, sorted(_LABEL_GROUPS)):
            labelled[name].setForceGroup(group)
        multipole, vdw = labelled["AmoebaMultipoleForce"], labelled["AmoebaVdwForce"]
        self.settings = {
            "gen_label_ewald_error_tolerance": multipole.getEwaldErrorTolerance(),
            "gen_label_mutual_epsilon": multipole.getMutualInducedTargetEpsilon(),
            "gen_label_vdw_cutoff_nm": vdw.getCutoffDistance().value_in_unit(unit.nanometer),
            "gen_label_vdw_dispersion_correction": bool(vdw.getUseDispersionCorrection()),
        }
        platform = openmm.Platform.getPlatformByName("CPU")
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": str(threads)})

    def label(self, frame: Frame) -> Frame:
        """The frame (wrapped positions kept) with AMOEBA multipole + vdW forces (eV/Å) and energy (eV)."""
        import openmm.unit as unit

        if not np.array_equal(frame.numbers, self.numbers):
            raise AdaScaleError("AMOEBA labelling: frames must share one composition and atom order")
        self.context.setPeriodicBoxVectors(*(frame.cell / 10))
        self.context.setPositions(whole_waters(frame.positions, frame.numbers, frame.cell) / 10)
        state = self.context.getState(getForces=True, getEnergy=True, groups=_LABEL_GROUPS)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
        return Frame(frame.numbers, frame.positions, frame.cell, frame.pbc, np.asarray(forces, dtype=float), float(energy))


def label_amoeba(frames: Sequence[Frame], *, threads: int = 1, progress: bool = True) -> tuple[list[Frame], dict]:
    """AMOEBA-labelled copies of ``frames`` (one composition) and the label settings as ``gen_*`` keys."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    labeller = AmoebaLabeller(frames[0].numbers, frames[0].cell, threads)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    labelled = []
    with Progress(*columns, disable=not progress) as bar:
        for frame in bar.track(frames, description=f"AMOEBA labels ({AMOEBA_FORCEFIELD})"):
            labelled.append(labeller.label(frame))
    info = {
        "gen_labels": "amoeba",
        "gen_label_forcefield": AMOEBA_FORCEFIELD,
        "gen_label_terms": "+".join(AMOEBA_TERMS),
        "gen_label_polarization": AMOEBA_POLARIZATION,
        "gen_label_pme_cutoff_nm": AMOEBA_PME_CUTOFF_NM,
        "gen_label_version": AMOEBA_LABEL_VERSION,
        **labeller.settings,
    }
    return labelled, info
