"""MD inside OpenMM with an adascale model as an ``openmm.PythonForce``.

OpenMM integrates; the model gives energy and forces through the same
:class:`~adascale.deploy.potential.Potential` the ASE calculator uses (its Verlet list keeps
working: OpenMM may re-wrap positions, which only triggers a rebuild). Rigid water uses
OpenMM's SETTLE: each water found by connectivity gets three distance constraints (O–H, O–H,
H–H) at its current geometry, which OpenMM solves analytically. Ensembles: NVE
(``VerletIntegrator``), NVT (``LangevinMiddleIntegrator``), NPT (NVT plus a
``MonteCarloBarostat``; the model energy at the trial box decides each volume move, so the
density is the model's own). Reporters: a DCD trajectory and a state-data CSV.

Units: OpenMM works in nm, ps, kJ/mol; the Potential in Å, eV. Device: the model runs where
the Potential was put (``Potential(model, device="cuda")``); OpenMM hands the positions over as
CPU arrays and gets the forces back as CPU arrays, whatever its own platform.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from adascale.deploy.md import MDSummary, start_velocities
from adascale.deploy.potential import Potential
from adascale.deploy.rigid_water import find_waters, whole_waters
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV, NM_PER_A

ENSEMBLES = ("nve", "nvt", "npt")
AMU_G = 1.66053906660e-24  # g per atomic mass unit


def python_force(potential: Potential, numbers: np.ndarray, pbc: np.ndarray):
    """An ``openmm.PythonForce`` whose energy (kJ/mol) and forces (kJ/mol/nm) are the potential's."""
    import openmm
    from openmm.unit import nanometer

    periodic = bool(pbc.all())
    zero_cell = np.zeros((3, 3))
    last: dict = {}

    def compute(state):
        positions = state.getPositions(asNumpy=True).value_in_unit(nanometer) / NM_PER_A  # nm -> Å
        cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nanometer) / NM_PER_A if periodic else zero_cell
        # Reading the energy (getState) and the next step evaluate the same positions: compute once.
        if not (last and np.array_equal(last["positions"], positions) and np.array_equal(last["cell"], cell)):
            result = potential.compute(numbers, positions, cell, pbc)
            last.update(positions=positions, cell=cell, out=(result.energy * KJ_MOL_PER_EV, result.forces * KJ_MOL_NM_PER_EV_A))
        return last["out"]

    force = openmm.PythonForce(compute)
    force.setUsesPeriodicBoundaryConditions(periodic)
    return force


def build_system(atoms, potential: Potential, *, rigid_water: bool = True):
    """(openmm.System, openmm.app.Topology, waters (W, 3)) for ``atoms`` with the model as its only force.

    Its particles sit at :func:`~adascale.deploy.rigid_water.whole_waters` of ``atoms`` (give
    those to the context: its constraints are not periodic)."""
    import openmm

    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise AdaScaleError(f"the OpenMM engine needs a cell periodic in 3D or a molecule, got pbc={pbc.tolist()}")
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    waters = find_waters(atoms) if rigid_water else np.zeros((0, 3), dtype=int)
    positions = whole_waters(atoms, waters)
    lengths = np.linalg.norm(positions[waters[:, [0, 0, 1]]] - positions[waters[:, [1, 2, 2]]], axis=2) * NM_PER_A
    for (o, h1, h2), (d1, d2, d3) in zip(waters, lengths):
        system.addConstraint(int(o), int(h1), float(d1))
        system.addConstraint(int(o), int(h2), float(d2))
        system.addConstraint(int(h1), int(h2), float(d3))
    system.addForce(python_force(potential, atoms.numbers.copy(), pbc))

    topology = water_ion_topology(atoms, waters)
    if pbc.all():
        box = [openmm.Vec3(*row) * NM_PER_A for row in np.asarray(atoms.cell)]
        system.setDefaultPeriodicBoxVectors(*box)
    return system, topology, waters


def water_ion_topology(atoms, waters: np.ndarray):
    """OpenMM topology of ``atoms``: one HOH residue (with its two O–H bonds) per water of
    ``waters`` (W, 3), one residue per other atom; the box of a 3D-periodic cell (nm)."""
    from openmm import app, unit

    topology = app.Topology()
    chain = topology.addChain()
    in_water = np.full(len(atoms), -1)
    in_water[waters.ravel()] = np.repeat(np.arange(len(waters)), 3)
    contiguous = np.ptp(waters, axis=1) == 2 if len(waters) else np.zeros(0, dtype=bool)  # OpenMM residues must be
    added = []
    for index, number in enumerate(atoms.numbers):
        element = app.Element.getByAtomicNumber(int(number))
        water = in_water[index]
        if water >= 0 and contiguous[water]:
            if index == waters[water].min():
                residue = topology.addResidue("HOH", chain)
        else:  # an ion, another atom, or a water whose atoms are not consecutive: one residue per atom
            residue = topology.addResidue(element.symbol.upper(), chain)
        added.append(topology.addAtom(element.symbol, element, residue))
    for o, h1, h2 in waters:  # bonds, so force fields and viewers recognise the waters
        topology.addBond(added[o], added[h1])
        topology.addBond(added[o], added[h2])
    if np.asarray(atoms.pbc).all():
        topology.setPeriodicBoxVectors(np.asarray(atoms.cell) * NM_PER_A * unit.nanometer)
    return topology


def langevin_integrator(timestep_fs: float, temperature_K: float, friction_per_fs: float, seed: int):
    """OpenMM's LangevinMiddleIntegrator, its noise seeded from ``seed`` (constraints to 1e-8)."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin, friction_per_fs * 1e3 / unit.picosecond, timestep_fs * 1e-3 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(seed + 1)
    integrator.setConstraintTolerance(1e-8)
    return integrator


def add_barostat(system, pressure_bar: float, temperature_K: float, interval: int, seed: int) -> None:
    """Add a MonteCarloBarostat to ``system``, seeded from ``seed``."""
    import openmm
    from openmm import unit

    barostat = openmm.MonteCarloBarostat(pressure_bar * unit.bar, temperature_K * unit.kelvin, interval)
    barostat.setRandomNumberSeed(seed + 2)
    system.addForce(barostat)


def cpu_simulation(topology, system, integrator, positions: np.ndarray, velocities: np.ndarray, threads: int | None):
    """An ``app.Simulation`` on the CPU platform at ``positions`` (n, 3) Å (whole molecules: constraints
    are not periodic) and ``velocities`` (n, 3) Å/fs, both made to satisfy the constraints."""
    import openmm
    from openmm import app

    properties = {"Threads": str(threads)} if threads else {}
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"), properties)
    simulation.context.setPositions(positions * NM_PER_A)
    simulation.context.setVelocities(velocities * 100.0)  # Å/fs -> nm/ps
    simulation.context.applyConstraints(1e-8)
    simulation.context.applyVelocityConstraints(1e-8)
    return simulation


def run_openmm(
    atoms,
    potential: Potential,
    *,
    steps: int,
    timestep_fs: float = 1.0,
    ensemble: str = "nve",
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    pressure_bar: float = 1.0,
    barostat_interval: int = 25,
    rigid_water: bool = True,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    interval: int = 1,
    seed: int = 0,
    threads: int | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> MDSummary:
    """Run ``steps`` of NVE, NVT or NPT MD in OpenMM from ``atoms`` (updated to the last frame).

    Starting velocities are those of the ASE engine (:func:`adascale.deploy.md.start_velocities`,
    same seed, same constraints), so both engines start from the same state. Every ``interval``
    steps: the frame to ``trajectory`` (DCD), energies to ``log`` (OpenMM's state data CSV),
    and ``on_step(step, E_tot eV, T K)``. The summary has the density (g/cm³) for periodic cells.
    """
    import openmm
    from openmm import app, unit

    if ensemble not in ENSEMBLES:
        raise AdaScaleError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if steps < 0 or timestep_fs <= 0 or interval < 1:
        raise AdaScaleError(f"need steps >= 0, timestep > 0 fs and interval >= 1, got {steps}, {timestep_fs}, {interval}")
    periodic = bool(np.asarray(atoms.pbc).all())
    if ensemble == "npt" and not periodic:
        raise AdaScaleError("NPT needs a cell periodic in 3D")
    system, topology, waters = build_system(atoms, potential, rigid_water=rigid_water)
    velocities = start_velocities(atoms, temperature_K, np.random.default_rng(seed), rigid_water=rigid_water)  # Å/fs
    if ensemble == "nve":
        integrator = openmm.VerletIntegrator(timestep_fs * 1e-3 * unit.picoseconds)
        integrator.setConstraintTolerance(1e-8)
    else:
        integrator = langevin_integrator(timestep_fs, temperature_K, friction_per_fs, seed)
    if ensemble == "npt":
        add_barostat(system, pressure_bar, temperature_K, barostat_interval, seed)
    simulation = cpu_simulation(topology, system, integrator, whole_waters(atoms, waters), velocities, threads)

    if trajectory is not None:
        simulation.reporters.append(app.DCDReporter(str(trajectory), interval))
    if log is not None:
        simulation.reporters.append(
            app.StateDataReporter(
                str(log), interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True, totalEnergy=True,
                temperature=True, volume=periodic, density=periodic,
            )
        )  # fmt: skip
    dof = 3 * len(atoms) - system.getNumConstraints()
    total_mass_g = float(atoms.get_masses().sum()) * AMU_G
    times, energies, temperatures, densities = [], [], [], []

    def record(step: int) -> None:
        state = simulation.context.getState(getEnergy=True, enforcePeriodicBox=False)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
        total = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV + kinetic
        times.append(state.getTime().value_in_unit(unit.picosecond))
        energies.append(total)
        temperatures.append(2.0 * kinetic / (dof * 8.617333262e-5))
        if periodic:
            volume_cm3 = state.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3) * 1e-21
            densities.append(total_mass_g / volume_cm3)
        if on_step is not None:
            on_step(step, total, temperatures[-1])

    record(0)
    done = 0
    while done < steps:
        chunk = min(interval, steps - done)
        simulation.step(chunk)
        done += chunk
        record(done)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    atoms.positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) / NM_PER_A
    if periodic:
        atoms.cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) / NM_PER_A
    simulation.reporters.clear()  # OpenMM's reporters close their files when released
    return MDSummary(
        done, len(atoms), len(waters), np.array(times), np.array(energies), np.array(temperatures), np.array(densities)
    )
