"""Molecular dynamics through ASE with an adascale branch or mixture.

Rigid water: the NaCl(aq) testbed's labels come from rigid SPC/E water, so its frames never
show a stretched or bent water and a model trained on them knows nothing about those
motions. MD must keep water rigid too: :func:`rigid_water_constraint` finds each water by
connectivity (an O with exactly two H within ``bond_cutoff``) and fixes its O–H, O–H and
H–H distances with ASE's ``FixBondLengths`` (RATTLE), which removes 3 degrees of freedom per
water. Disable it only for models trained on flexible water.

NVE uses velocity Verlet, NVT Langevin. The summary reports the total-energy drift, the
least-squares slope of E_tot(t) per atom (eV/atom/ps): for a conservative potential and a
small enough timestep it is ~0 (velocity Verlet keeps a shadow energy, so E_tot only
fluctuates by O(dt²)); per-atom force mixing, which is not the gradient of an energy, drifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.constraints import FixBondLengths

from adascale.errors import AdaScaleError

ENSEMBLES = ("nve", "nvt")


def find_waters(atoms, bond_cutoff: float = 1.25) -> np.ndarray:
    """(W, 3) atom indices [O, H, H] of every water, found by connectivity.

    A water is an O with exactly two H closer than ``bond_cutoff`` Å (minimum image). An H
    bonded to several O, or an O with one or three H, is an error: the frame is not made of
    intact waters.
    """
    from adascale.data.frames import Frame
    from adascale.data.neighbours import neighbour_list

    frame = Frame(atoms.numbers, atoms.get_positions(), np.asarray(atoms.cell), np.asarray(atoms.pbc, bool), None, None)
    pairs = neighbour_list(frame, bond_cutoff)
    bonded = (atoms.numbers[pairs.i] == 8) & (atoms.numbers[pairs.j] == 1)
    oxygen, hydrogen = pairs.i[bonded], pairs.j[bonded]
    if len(np.unique(hydrogen)) != len(hydrogen):
        raise AdaScaleError(f"rigid water: some H has several O within {bond_cutoff} Å; is this water?")
    waters = []
    for o in np.unique(oxygen):
        hs = np.sort(hydrogen[oxygen == o])
        if len(hs) != 2:
            raise AdaScaleError(f"rigid water: O atom {o} has {len(hs)} H within {bond_cutoff} Å, expected 2")
        waters.append([o, *hs])
    return np.array(waters, dtype=int).reshape(-1, 3)


class RigidWaters(FixBondLengths):
    """ASE's ``FixBondLengths`` (RATTLE/SHAKE) on each water's O–H, O–H and H–H distances, vectorised.

    Pairs are ordered in three slots (all O–H1, all O–H2, all H–H). Pairs of one slot share
    no atom, so updating a whole slot at once is exactly ASE's pair-by-pair sweep in this
    order (same iterates, same tolerance test); it only replaces ~10^3 Python-level
    ``find_mic`` calls per iteration by three array operations.
    """

    def __init__(self, waters: np.ndarray, tolerance: float = 1e-13) -> None:
        waters = np.asarray(waters, dtype=int).reshape(-1, 3)
        super().__init__(np.concatenate([waters[:, [0, 1]], waters[:, [0, 2]], waters[:, [1, 2]]]), tolerance=tolerance)
        self.slots = [slice(k * len(waters), (k + 1) * len(waters)) for k in range(3)]

    def _sweeps(self, atoms, update) -> None:
        """Repeat ``update(slot, d, m)`` over the slots until no pair needs a correction."""
        from ase.geometry import find_mic

        if self.bondlengths is None:
            self.bondlengths = self.initialize_bond_lengths(atoms)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        d = find_mic(atoms.positions[a] - atoms.positions[b], atoms.cell, atoms.pbc)[0]  # (P, 3) old bond vectors
        masses = atoms.get_masses()
        reduced = 1.0 / (1.0 / masses[a] + 1.0 / masses[b])
        for _ in range(self.maxiter):
            if not any([update(slot, d[slot], reduced[slot]) for slot in self.slots]):
                return
        raise RuntimeError("Did not converge")

    def adjust_positions(self, atoms, new) -> None:
        old, masses = atoms.positions, atoms.get_masses()

        def update(slot, d0, m) -> bool:
            a, b = self.pairs[slot, 0], self.pairs[slot, 1]
            d1 = new[a] - new[b] - (old[a] - old[b]) + d0
            x = 0.5 * (self.bondlengths[slot] ** 2 - (d1 * d1).sum(1)) / (d0 * d1).sum(1)
            return self._apply(new, a, b, x, m, masses, d0, positions=True)

        self._sweeps(atoms, update)

    def adjust_momenta(self, atoms, p) -> None:
        masses = atoms.get_masses()

        def update(slot, d, m) -> bool:
            a, b = self.pairs[slot, 0], self.pairs[slot, 1]
            x = -((p[a] / masses[a, None] - p[b] / masses[b, None]) * d).sum(1) / self.bondlengths[slot] ** 2
            return self._apply(p, a, b, x, m, masses, d, positions=False)

        self._sweeps(atoms, update)

    def _apply(self, array, a, b, x, m, masses, d, *, positions: bool) -> bool:
        """ASE's correction of the pairs with |x| > tolerance; True if any was corrected."""
        x = np.where(np.abs(x) > self.tolerance, x, 0.0)
        step = (x * m)[:, None] * d
        array[a] += step / masses[a, None] if positions else step
        array[b] -= step / masses[b, None] if positions else step
        return bool(x.any())


def rigid_water_constraint(atoms, bond_cutoff: float = 1.25) -> RigidWaters | None:
    """The rigid-water constraint of ``atoms`` (see :func:`find_waters`), or None without water."""
    waters = find_waters(atoms, bond_cutoff)
    return RigidWaters(waters) if len(waters) else None


@dataclass
class MDSummary:
    """What an MD run measured. Energies eV, time ps."""

    steps: int
    n_atoms: int
    n_waters_rigid: int
    time_ps: np.ndarray  # (T,)
    total_energy: np.ndarray  # (T,) eV
    temperature: np.ndarray  # (T,) K

    @property
    def drift_ev_per_atom_ps(self) -> float:
        """Least-squares slope of E_tot(t) divided by the number of atoms."""
        if len(self.time_ps) < 2:
            return 0.0
        return float(np.polyfit(self.time_ps, self.total_energy, 1)[0] / self.n_atoms)

    @property
    def max_deviation_ev_per_atom(self) -> float:
        """max_t |E_tot(t) − E_tot(0)| per atom."""
        return float(np.abs(self.total_energy - self.total_energy[0]).max() / self.n_atoms)


def run_md(
    atoms,
    calculator,
    *,
    steps: int,
    timestep_fs: float = 1.0,
    ensemble: str = "nve",
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    rigid_water: bool = True,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    interval: int = 1,
    seed: int = 0,
    on_step: Callable[[int, float, float], None] | None = None,
) -> MDSummary:
    """Run ``steps`` of NVE (velocity Verlet) or NVT (Langevin) MD on ``atoms`` (modified in place).

    Velocities are drawn from Maxwell–Boltzmann at ``temperature_K`` (seeded) unless ``atoms``
    already has momenta; the centre of mass is at rest. Every ``interval`` steps the frame goes
    to ``trajectory`` (ASE .traj) and energies to ``log`` (ASE MDLogger: time, E_tot, E_pot,
    E_kin, T). ``on_step(step, E_tot, T)`` is called every ``interval`` steps.
    """
    from ase import units
    from ase.io.trajectory import Trajectory
    from ase.md import MDLogger
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    if ensemble not in ENSEMBLES:
        raise AdaScaleError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if steps < 0 or timestep_fs <= 0 or interval < 1:
        raise AdaScaleError(f"need steps >= 0, timestep > 0 fs and interval >= 1, got {steps}, {timestep_fs}, {interval}")
    constraint = rigid_water_constraint(atoms) if rigid_water else None
    atoms.set_constraint(constraint)
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if not atoms.get_momenta().any():
        thermalize_momenta(atoms, temperature_K, rng=rng)
        Stationary(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dynamics = VelocityVerlet(atoms, timestep=dt)
    else:
        # fixcm=False: ASE's centre-of-mass fix biases the NVT distribution (its own warning);
        # the centre of mass then diffuses, which changes nothing physical.
        dynamics = Langevin(
            atoms, timestep=dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, fixcm=False, rng=rng
        )

    times, energies, temperatures = [], [], []

    def record() -> None:
        times.append(dynamics.get_time() / (1000 * units.fs))
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())
        if on_step is not None:
            on_step(dynamics.nsteps, energies[-1], temperatures[-1])

    writers = []
    if trajectory is not None:
        writers.append(Trajectory(str(trajectory), "w", atoms))
        dynamics.attach(writers[-1].write, interval=interval)
    if log is not None:
        writers.append(MDLogger(dynamics, atoms, str(log), header=True, mode="w"))
        dynamics.attach(writers[-1], interval=interval)
    dynamics.attach(record, interval=interval)
    try:
        dynamics.run(steps)
    finally:
        for writer in writers:
            writer.close()
    n_waters = 0 if constraint is None else len(constraint.pairs) // 3
    return MDSummary(steps, len(atoms), n_waters, np.array(times), np.array(energies), np.array(temperatures))
