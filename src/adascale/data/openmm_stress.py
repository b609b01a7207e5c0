"""Reference stress from an OpenMM system: central finite differences of its energy under strain.

OpenMM has no virial. The stress here is ASE's: σ = (1/V) dE/dε for a homogeneous strain ε of
the cell and of *all* atom positions (rows: cell' = cell (1 + ε), r' = r (1 + ε)), in eV/Å³;
positive components mean the system pulls inwards (pressure = -trace/3). Water in the testbed
is rigid and has no bonded terms, so the energy is defined for stretched molecules too, and
this atomic stress includes the response of the intermolecular energy to stretching each
molecule (balanced in MD by the constraint forces): measured on an equilibrated 2 nm testbed
frame, the atomic-strain pressure is about +23,000 bar where the molecular one (molecules
moved rigidly with their centres, what OpenMM's barostat feels) is about -2,700 bar. The two
differ by a term fixed by the positions and forces alone, -(1/V) Σ_i (r_i - c_i) ⊗ F_i with c_i
the centre of atom i's molecule, so a model that learns forces and this stress also learns the
molecular stress.

Components. OpenMM keeps boxes in reduced (lower-triangular) form, so shears are applied as
lower-triangular deformations 1 + h e_ji (j > i): for a rotation-invariant energy dE/dF_ji
equals the derivative for the symmetric strain (ε_ij = ε_ji = h/2), the six Voigt
components from 12 energy evaluations, symmetric by construction.

Step. The real-space cutoff truncates Lennard-Jones (and the erfc tail) without a shift, so
the energy jumps when a pair crosses 0.9 nm. A tiny step sees a few such crossings, a
different set for each step; a larger one averages them into their mean (what the Monte Carlo
barostat feels: its volume moves are ~1 % in volume). Measured on a 2 nm frame: diagonal
components at h = 3e-4, 1e-3, 2e-3, 4e-3, 8e-3 were -24498, -24412, -24203, -24193, -24214 bar
(xx), so they settle from h = 2e-3 on and agree within ~50 bar (3e-5 eV/Å³) up to 8e-3;
re-evaluating after rigid translations of the whole frame moved them by at most 2 bar
(energy noise of the CPU platform, DeterministicForces). ``STRAIN_STEP`` = 4e-3 (1.2 % in volume).

Dispersion correction. PME NonbondedForce adds a box-only energy E_disp = C/V (the mean
Lennard-Jones tail beyond the cutoff): no force, but a stress -(E_disp/V) δ_ij (about -127 bar of
pressure on the 2 nm testbed). The labels INCLUDE it (the full energy OpenMM's barostat
feels); :meth:`StressLabeller.dispersion_stress` gives that part alone (stored per frame as
``REF_stress_dispersion``) for anyone who wants to leave it out.
"""

from __future__ import annotations

import numpy as np

from adascale.units import KJ_MOL_PER_EV

STRAIN_STEP = 4e-3
#: (i, j) of the six components; strains act as deformations 1 + h e_ji (lower-triangular for i <= j).
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
KJ_MOL_NM3_PER_EV_A3 = KJ_MOL_PER_EV * 1000.0  # 1 nm³ = 1000 Å³


class StressLabeller:
    """Stress of configurations of one OpenMM system (its own contexts; the caller's stays untouched).

    threads: CPU threads of the labelling contexts.
    """

    def __init__(self, system, threads: int = 1, step: float = STRAIN_STEP) -> None:
        import openmm

        self.step = step
        without_dispersion = openmm.XmlSerializer.clone(system)
        for force in without_dispersion.getForces():
            if isinstance(force, openmm.NonbondedForce):
                force.setUseDispersionCorrection(False)
        self.context = _energy_context(system, threads)
        self.without_dispersion = _energy_context(without_dispersion, threads)

    def stress(self, positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
        """(3, 3) eV/Å³ for positions (n, 3) nm (molecules as the dynamics keeps them) and a reduced box (3, 3) nm."""
        sigma = np.zeros((3, 3))
        for i, j in VOIGT_PAIRS:
            deformation = np.zeros((3, 3))
            deformation[j, i] = self.step
            plus = self._energy(self.context, positions_nm, box_nm, deformation)
            minus = self._energy(self.context, positions_nm, box_nm, -deformation)
            sigma[i, j] = sigma[j, i] = (plus - minus) / (2 * self.step)
        return sigma / _volume(box_nm) / KJ_MOL_NM3_PER_EV_A3

    def dispersion_stress(self, positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
        """(3, 3) eV/Å³: the dispersion correction's part of :meth:`stress`, -(E_disp / V) δ_ij."""
        zero = np.zeros((3, 3))
        e_disp = self._energy(self.context, positions_nm, box_nm, zero) - self._energy(
            self.without_dispersion, positions_nm, box_nm, zero
        )
        return -e_disp / _volume(box_nm) / KJ_MOL_NM3_PER_EV_A3 * np.eye(3)

    @staticmethod
    def _energy(context, positions_nm: np.ndarray, box_nm: np.ndarray, deformation: np.ndarray) -> float:
        """kJ/mol of the configuration deformed by 1 + ``deformation`` (rows: r' = r (1 + d))."""
        import openmm.unit as unit

        transform = np.eye(3) + deformation
        context.setPeriodicBoxVectors(*(box_nm @ transform))
        context.setPositions(positions_nm @ transform)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _energy_context(system, threads: int):
    import openmm

    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(threads), "DeterministicForces": "true"}
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)


def _volume(box_nm: np.ndarray) -> float:
    return abs(float(np.linalg.det(box_nm)))
