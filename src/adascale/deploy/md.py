"""Molecular dynamics through ASE with an adascale branch or mixture.

Rigid water: the NaCl(aq) testbed's labels come from rigid SPC/E water, so MD keeps every
water rigid with :class:`adascale.deploy.rigid_water.RigidWater` (found by connectivity,
RATTLE on its three distances). Disable it only for models trained on flexible water.

NVE uses velocity Verlet, NVT Langevin. The summary reports the total-energy drift, the
least-squares slope of E_tot(t) per atom (eV/atom/ps): for a conservative potential and a
small enough timestep it is ~0 (velocity Verlet keeps a shadow energy, so E_tot only
fluctuates by O(dt²)); per-atom force mixing, which is not the gradient of an energy, drifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adascale.deploy.rigid_water import rigid_water_constraint
from adascale.errors import AdaScaleError

ENSEMBLES = ("nve", "nvt")


@dataclass
class MDSummary:
    """What an MD run measured. Energies eV, time ps."""

    steps: int
    n_atoms: int
    n_waters_rigid: int
    time_ps: np.ndarray  # (T,)
    total_energy: np.ndarray  # (T,) eV
    temperature: np.ndarray  # (T,) K
    density: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (T,) g/cm³ where an engine reports it

    @property
    def drift_ev_per_atom_ps(self) -> float:
        """Least-squares slope of E_tot(t) divided by the number of atoms."""
        if len(self.time_ps) < 2:
            return 0.0
        return float(np.polyfit(self.time_ps, self.total_energy, 1)[0] / self.n_atoms)

    def mean_density(self, blocks: int = 5) -> tuple[float, float]:
        """(mean, standard error) of the density over the second half of the run, g/cm³.

        The first half is dropped as equilibration; the error is the standard error of
        ``blocks`` block means (correlated samples make the naive error far too small).
        """
        half = self.density[len(self.density) // 2 :]
        if len(half) < blocks:
            return float(half.mean()), float("nan")
        means = np.array([block.mean() for block in np.array_split(half, blocks)])
        return float(half.mean()), float(means.std(ddof=1) / np.sqrt(blocks))

    @property
    def max_deviation_ev_per_atom(self) -> float:
        """max_t |E_tot(t) − E_tot(0)| per atom."""
        return float(np.abs(self.total_energy - self.total_energy[0]).max() / self.n_atoms)


def start_velocities(atoms, temperature_K: float, rng: np.random.Generator, *, rigid_water: bool = True) -> np.ndarray:
    """Set the rigid-water constraint and the starting momenta on ``atoms``; return the velocities (n, 3) Å/fs.

    Momenta are drawn from Maxwell–Boltzmann at ``temperature_K`` (from ``rng``), constrained and with the centre of mass at rest, unless ``atoms`` already
    has momenta. Every engine starts from these, so ASE and OpenMM runs begin alike.
    """
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms.set_constraint(rigid_water_constraint(atoms) if rigid_water else None)
    if not atoms.get_momenta().any():
        thermalize_momenta(atoms, temperature_K, rng=rng)
        Stationary(atoms)
    return atoms.get_velocities() * units.fs


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
    from ase.md.verlet import VelocityVerlet

    if ensemble not in ENSEMBLES:
        raise AdaScaleError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if steps < 0 or timestep_fs <= 0 or interval < 1:
        raise AdaScaleError(f"need steps >= 0, timestep > 0 fs and interval >= 1, got {steps}, {timestep_fs}, {interval}")
    rng = np.random.default_rng(seed)
    start_velocities(atoms, temperature_K, rng, rigid_water=rigid_water)
    constraint = atoms.constraints[0] if atoms.constraints else None
    atoms.calc = calculator
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
    n_waters = 0 if constraint is None else len(constraint.waters)
    return MDSummary(steps, len(atoms), n_waters, np.array(times), np.array(energies), np.array(temperatures))
