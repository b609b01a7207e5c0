"""One MD phase (NPT or NVT) of the model or the reference in OpenMM, sampled, with collapses caught.

Both potentials get the same integrator (LangevinMiddle), thermostat, barostat, starting
positions, starting velocities and seeds, from :mod:`adascale.deploy.openmm_engine`: the
reference is the testbed's own OpenMM system (SPC/E + Joung-Cheatham, PME, rigid water), the
model its ``PythonForce`` system (SETTLE). Units: Å, ps, g/cm³.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from adascale.deploy.openmm_engine import AMU_G, add_barostat, cpu_simulation, langevin_integrator
from adascale.units import KJ_MOL_PER_EV, NM_PER_A
from adascale.validate.settings import ValidateSettings

#: Called after each sample with (positions (n, 3) Å, box lengths (3,) Å); returns a collapse criterion or None.
Check = Callable[[np.ndarray, np.ndarray], "str | None"]


@dataclass
class Trace:
    """A sampled phase: every ``sample_ps`` from t = 0 (the start) to the end or the collapse."""

    time_ps: list[float] = field(default_factory=list)
    density: list[float] = field(default_factory=list)  # g/cm³
    energy: list[float] = field(default_factory=list)  # eV, potential
    positions: list[np.ndarray] = field(default_factory=list)  # (n, 3) Å, unwrapped; kept only if asked
    boxes: list[np.ndarray] = field(default_factory=list)  # (3,) Å
    collapse: str | None = None  # the first collapse criterion met (the run goes on unless the MD failed)
    collapse_ps: float | None = None  # the time of the first sample that met it
    failed: bool = False  # the MD itself failed (exception or NaN): the trace ends there

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "time_ps": np.array(self.time_ps),
            "density": np.array(self.density),
            "energy": np.array(self.energy),
            "positions": np.array(self.positions, dtype=np.float32) if self.positions else np.zeros((0, 0, 3), np.float32),
            "boxes": np.array(self.boxes).reshape(-1, 3),
        }


def reference_system(atoms, waters: np.ndarray):
    """(system, topology) of the testbed force field for ``atoms`` (waters (W, 3) [O, H, H])."""
    from adascale.data.testbed import build_system
    from adascale.deploy.openmm_engine import water_ion_topology

    topology = water_ion_topology(atoms, waters)
    return build_system(topology, np.asarray(atoms.cell) * NM_PER_A), topology


def run_phase(
    system,
    topology,
    positions: np.ndarray,
    velocities: np.ndarray,
    box: np.ndarray,
    settings: ValidateSettings,
    *,
    npt: bool,
    steps: int,
    keep_positions: bool,
    check: Check | None = None,
    advance: Callable[[float], None] = lambda ps: None,
    catch: bool = False,
) -> Trace:
    """Run ``steps`` from ``positions`` (n, 3) Å (whole molecules) and ``velocities`` (n, 3) Å/fs in an
    orthorhombic ``box`` (3,) Å, with a barostat if ``npt``; sample every ``protocol.sample_steps``.

    ``catch`` (for the model): an exception from the engine or the potential, or a NaN, ends the
    run as a collapse recorded with its time instead of raising; ``check``'s criterion (an
    approach closer than the reference shows) records the first collapse, and the run goes on,
    so every observable of a run that survives it is still measured.
    """
    import openmm
    from openmm import unit

    state, protocol = settings.state, settings.protocol
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * NM_PER_A for row in np.diag(box)))
    if npt:
        add_barostat(system, state.pressure_bar, state.temperature_K, protocol.barostat_interval, protocol.seed)
    integrator = langevin_integrator(protocol.timestep_fs, state.temperature_K, protocol.friction_per_ps * 1e-3, protocol.seed)
    simulation = cpu_simulation(topology, system, integrator, positions, velocities, settings.threads)
    mass_g = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())) * AMU_G
    trace = Trace()
    sample_ps = protocol.sample_interval_ps

    def sample() -> str | None:
        now = simulation.context.getState(getPositions=True, getEnergy=True)
        lengths = np.diag(now.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)) / NM_PER_A
        xyz = now.getPositions(asNumpy=True).value_in_unit(unit.nanometer) / NM_PER_A
        energy = now.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
        if not (np.isfinite(xyz).all() and np.isfinite(energy)):
            return "NaN in positions or energy"
        reason = check(xyz, lengths) if check is not None else None
        if reason is not None and trace.collapse is None:
            if not catch:
                raise RuntimeError(f"reference MD failed: {reason}")
            trace.collapse, trace.collapse_ps = reason, len(trace.time_ps) * sample_ps
        trace.time_ps.append(len(trace.time_ps) * sample_ps)
        trace.density.append(mass_g / (np.prod(lengths) * 1e-24))
        trace.energy.append(energy)
        trace.boxes.append(lengths)
        if keep_positions:
            trace.positions.append(xyz)
        return None

    def guarded(action: Callable[[], str | None]) -> str | None:
        if not catch:
            return action()
        try:
            return action()
        except Exception as exc:  # the model's MD: any failure is its collapse, reported, never a crash
            return f"the MD failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")

    def step_and_sample() -> str | None:
        simulation.step(protocol.sample_steps)
        return sample()

    reason = guarded(sample)
    for _ in range(steps // protocol.sample_steps):
        if reason is not None:
            break
        reason = guarded(step_and_sample)
        advance(sample_ps)
    if reason is not None:  # the MD failed
        if not catch:
            raise RuntimeError(f"reference MD failed: {reason}")
        trace.failed = True
        if trace.collapse is None or trace.collapse_ps > len(trace.time_ps) * sample_ps:
            trace.collapse, trace.collapse_ps = reason, len(trace.time_ps) * sample_ps
    return trace
