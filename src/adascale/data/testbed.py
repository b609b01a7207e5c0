"""The NaCl(aq) testbed: seeded, cached OpenMM trajectories of SPC/E water + NaCl.

Recipe per replica: ``addSolvent`` fills a cubic box with SPC/E water (``amber14/spce.xml``),
randomly chosen waters are replaced by Na+ and Cl- (seeded), the energy is minimised, then
Langevin dynamics (2 fs, rigid water, PME with a 0.9 nm cutoff) equilibrates at 1 bar with a
Monte Carlo barostat. The box is then set to the mean volume of the second half of the
equilibration (molecules move rigidly with their centres) and the barostat removed: frames are
sampled NVT every ``stride_ps``. Labels are OpenMM's full forces and potential energy in eV/Å
and eV; positions are wrapped into the cell atom by atom, so molecules may be split across its
faces (re-evaluate them with ``NonbondedForce.setExceptionsUsePeriodicBoundaryConditions(True)``).
With ``labels="amoeba"`` the same sampled frames (cached once) are relabelled with AMOEBA's
multipole + vdW forces (:mod:`adascale.data.amoeba`), cached under their own name.

Atom order in every frame: water as O, H, H triples, then all Na, then all Cl.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from adascale import __version__
from adascale.data.amoeba import AMOEBA_LABEL_VERSION, label_amoeba
from adascale.data.frames import Frame, read_frames, write_frames
from adascale.errors import AdaScaleError
from adascale.files import atomic_output
from adascale.units import KJ_MOL_NM_PER_EV_A, KJ_MOL_PER_EV

FORCEFIELD = "amber14/spce.xml"
PME_CUTOFF_NM = 0.9
TIMESTEP_PS = 0.002
FRICTION_PER_PS = 1.0
PRESSURE_BAR = 1.0
BAROSTAT_INTERVAL = 25  # steps between Monte Carlo volume moves
VOLUME_SAMPLE_STEPS = 50  # steps between box-volume samples during equilibration
#: A fresh ``addSolvent`` box is 6-8 % under-dense, so the barostat shrinks its edge by ~2-3 %:
#: the requested box must exceed twice the PME cutoff by this factor to stay valid throughout.
BOX_MARGIN = 1.05
AVOGADRO = 6.02214076e23
#: Bump whenever a change to this module would change the generated frames (invalidates caches).
GENERATOR_VERSION = 1
LABELS = ("spce", "amoeba")

ProgressCallback = Callable[[float], None]  # called with simulated picoseconds just completed


@dataclass(frozen=True)
class NaClSettings:
    """Everything that determines a generated testbed (and hence its cache key).

    frames: total over all replicas (replica r gets an equal share, the first ones one more).
    equil_ps: NPT equilibration per replica. The default 20 ps lets the barostat remove the
    6-8 % under-density of the fresh solvent box (it settles within ~10 ps) and then averages the
    volume over the last 10 ps; 0 skips equilibration and samples at the requested box.
    """

    frames: int = 100
    box_nm: float = 2.0
    molar: float = 1.0
    temperature: float = 300.0  # K
    stride_ps: float = 1.0
    equil_ps: float = 20.0
    seed: int = 0
    replicas: int = 1
    labels: str = "spce"  # spce: the dynamics' own forces; amoeba: relabelled (adascale.data.amoeba)

    def __post_init__(self) -> None:
        smallest_box = 2 * PME_CUTOFF_NM * BOX_MARGIN
        if self.frames < 1:
            raise AdaScaleError(f"--frames must be at least 1, got {self.frames}")
        if self.box_nm < smallest_box:
            raise AdaScaleError(
                f"--box-nm {self.box_nm:g} is too small: the box must be at least {smallest_box:.2f} nm, twice the "
                f"{PME_CUTOFF_NM} nm PME cutoff plus {BOX_MARGIN - 1:.0%} room for the barostat to compress it"
            )
        if not self.molar > 0 or self.ion_pairs < 1:
            raise AdaScaleError(
                f"--molar {self.molar:g} in a {self.box_nm:g} nm box gives no ion pair "
                f"({self.molar * AVOGADRO * 1e-24 * self.box_nm**3:.2f}); raise the concentration or the box"
            )
        if not self.temperature > 0:
            raise AdaScaleError(f"--temperature must be positive (K), got {self.temperature:g}")
        if self.stride_steps < 1:
            raise AdaScaleError(f"--stride-ps must be at least one {TIMESTEP_PS} ps time step, got {self.stride_ps:g}")
        if self.equil_ps < 0:
            raise AdaScaleError(f"--equil-ps must not be negative, got {self.equil_ps:g}")
        if not 1 <= self.replicas <= self.frames:
            raise AdaScaleError(f"--replicas must be between 1 and --frames ({self.frames}), got {self.replicas}")
        if self.seed < 0:
            raise AdaScaleError(f"--seed must not be negative, got {self.seed}")
        if self.labels not in LABELS:
            raise AdaScaleError(f"--labels must be one of {', '.join(LABELS)}, got {self.labels!r}")

    @property
    def ion_pairs(self) -> int:
        """Na+/Cl- pairs for the concentration in the requested box volume."""
        return round(self.molar * AVOGADRO * 1e-24 * self.box_nm**3)  # 1 nm^3 = 1e-24 L

    @property
    def stride_steps(self) -> int:
        return round(self.stride_ps / TIMESTEP_PS)

    @property
    def equil_steps(self) -> int:
        return round(self.equil_ps / TIMESTEP_PS)

    def replica_frames(self) -> list[int]:
        """Frames produced by each replica, in output order."""
        share, extra = divmod(self.frames, self.replicas)
        return [share + (r < extra) for r in range(self.replicas)]

    def cache_key(self) -> str:
        """Hash of the sampling settings (all but ``labels``) and the generator version."""
        sampling = {k: v for k, v in asdict(self).items() if k != "labels"}
        payload = json.dumps({"settings": sampling, "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def file_info(self) -> dict:
        """The settings as stored in every frame of the generated file (``gen_*`` keys)."""
        info = {f"gen_{k}": v for k, v in asdict(self).items()}
        info.update(
            gen_generator="adascale generate nacl",
            gen_generator_version=GENERATOR_VERSION,
            gen_adascale_version=__version__,
            gen_forcefield=FORCEFIELD,
            gen_ion_pairs=self.ion_pairs,
            gen_pme_cutoff_nm=PME_CUTOFF_NM,
            gen_timestep_ps=TIMESTEP_PS,
        )
        return info


def default_cache_dir() -> Path:
    """``~/.cache/adascale/testbeds``, resolved when called (no environment is changed)."""
    return Path("~/.cache/adascale/testbeds").expanduser()


def cache_path(settings: NaClSettings, cache_dir: Path | None = None) -> Path:
    """Where the testbed for these settings is (or will be) cached; AMOEBA labels beside their SPC/E sampling."""
    suffix = f"-amoeba{AMOEBA_LABEL_VERSION}" if settings.labels == "amoeba" else ""
    return (cache_dir or default_cache_dir()) / f"nacl-{settings.cache_key()}{suffix}.extxyz"


def generate_nacl(
    settings: NaClSettings,
    out: Path,
    *,
    cache_dir: Path | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the testbed for ``settings`` to ``out``, simulating only on a cache miss.

    threads: CPU threads in all (default: every core available), shared evenly by the replicas,
    which run in parallel processes. Returns ``out``.
    """
    threads = threads or len(os.sched_getaffinity(0))
    sampled_settings = replace(settings, labels="spce")
    sampled = cache_path(sampled_settings, cache_dir)
    if not sampled.exists():
        frames = _simulate(settings, max(1, threads // settings.replicas), progress)
        write_frames(sampled, frames, info=sampled_settings.file_info())
    cached = cache_path(settings, cache_dir)
    if not cached.exists():  # AMOEBA: relabel the cached SPC/E frames
        frames, label_info = label_amoeba(read_frames(sampled), threads=threads, progress=progress)
        write_frames(cached, [_without_gen_keys(frame) for frame in frames], info=settings.file_info() | label_info)
    with atomic_output(Path(out)) as tmp:
        shutil.copyfile(cached, tmp)
    return Path(out)


def _without_gen_keys(frame: Frame) -> Frame:
    """The frame with the SPC/E file's ``gen_*`` metadata dropped (the new file writes its own)."""
    frame.info = {k: v for k, v in frame.info.items() if not k.startswith("gen_")}
    return frame


def _simulate(settings: NaClSettings, threads_per_replica: int, progress: bool) -> list[Frame]:
    """All replicas' frames in replica order, with a progress bar in simulated picoseconds."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total_ps = settings.replicas * settings.equil_ps + settings.frames * settings.stride_ps
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} ps"))
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress) as bar:
        task = bar.add_task(f"NaCl(aq) testbed, {settings.replicas} replica(s)", total=total_ps)
        advance = functools.partial(bar.advance, task)
        if settings.replicas == 1:
            return _simulate_replica(settings, 0, threads_per_replica, advance)
        return _simulate_in_processes(settings, threads_per_replica, advance)


def _simulate_in_processes(settings: NaClSettings, threads_per_replica: int, advance: ProgressCallback) -> list[Frame]:
    """One spawned process per replica; their progress reports travel back through a managed queue."""
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(settings.replicas, mp_context=context) as pool:
        messages = manager.Queue()
        report = functools.partial(_put, messages)
        futures = [pool.submit(_simulate_replica, settings, r, threads_per_replica, report) for r in range(settings.replicas)]
        while not all(f.done() for f in futures):
            try:
                advance(messages.get(timeout=0.2))
            except queue_module.Empty:
                pass
        return [frame for future in futures for frame in future.result()]


def _put(messages, value: float) -> None:
    messages.put(value)


def _replica_seeds(seed: int, replica: int) -> dict[str, int]:
    """Independent seeds for one replica; OpenMM needs positive 31-bit ints (0 means 'random')."""
    words = np.random.SeedSequence(seed, spawn_key=(replica,)).generate_state(4)
    names = ("placement", "velocities", "integrator", "barostat")
    return {name: int(w % (2**31 - 1)) + 1 for name, w in zip(names, words)}


def build_system(topology, box_nm: np.ndarray):
    """The testbed's OpenMM system for ``topology`` (3x3 box in nm): PME 0.9 nm, rigid water."""
    import openmm.app as app
    import openmm.unit as unit

    topology.setPeriodicBoxVectors(box_nm * unit.nanometer)
    forcefield = app.ForceField(FORCEFIELD)
    return forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=PME_CUTOFF_NM * unit.nanometer, rigidWater=True
    )


def _solvated(settings: NaClSettings, rng: np.random.Generator):
    """Topology and positions (nm): ``addSolvent`` water with random waters swapped for ions."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField(FORCEFIELD)
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="spce", boxSize=openmm.Vec3(*[settings.box_nm] * 3) * unit.nanometer)
    waters = list(modeller.topology.residues())
    if 2 * settings.ion_pairs >= len(waters):
        raise AdaScaleError(
            f"--molar {settings.molar:g} needs {2 * settings.ion_pairs} ions but the box holds only {len(waters)} waters"
        )
    chosen = [waters[k] for k in rng.choice(len(waters), 2 * settings.ion_pairs, replace=False)]
    positions = modeller.getPositions()
    oxygens = [positions[next(a for a in w.atoms() if a.element.symbol == "O").index] for w in chosen]
    ions = app.Topology()
    chain = ions.addChain()
    for k in range(2 * settings.ion_pairs):
        name, element = ("NA", app.element.sodium) if k < settings.ion_pairs else ("CL", app.element.chlorine)
        ions.addAtom(name, element, ions.addResidue(name, chain))
    modeller.delete(chosen)
    modeller.add(ions, oxygens)
    return modeller.topology, modeller.getPositions()


def _simulate_replica(settings: NaClSettings, replica: int, threads: int, report: ProgressCallback) -> list[Frame]:
    """Run one replica and return its labelled frames."""
    import openmm
    import openmm.unit as unit

    seeds = _replica_seeds(settings.seed, replica)
    topology, positions = _solvated(settings, np.random.default_rng(seeds["placement"]))
    system = build_system(topology, np.eye(3) * settings.box_nm)
    temperature = settings.temperature * unit.kelvin
    integrator = openmm.LangevinMiddleIntegrator(temperature, FRICTION_PER_PS / unit.picosecond, TIMESTEP_PS * unit.picosecond)
    integrator.setRandomNumberSeed(seeds["integrator"])
    barostat = openmm.MonteCarloBarostat(PRESSURE_BAR * unit.bar, temperature, BAROSTAT_INTERVAL)
    barostat.setRandomNumberSeed(seeds["barostat"])
    barostat_index = system.addForce(barostat)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads), "DeterministicForces": "true"})
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature, seeds["velocities"])

    if settings.equil_steps:
        _equilibrate(context, integrator, topology, settings.equil_steps, report)
    system.removeForce(barostat_index)
    context.reinitialize(preserveState=True)

    numbers = np.array([atom.element.atomic_number for atom in topology.atoms()], dtype=np.int64)
    frames = []
    for _ in range(settings.replica_frames()[replica]):
        integrator.step(settings.stride_steps)
        frames.append(_labelled_frame(context, numbers))
        report(settings.stride_ps)
    return frames


def _equilibrate(context, integrator, topology, steps: int, report: ProgressCallback) -> None:
    """NPT for ``steps``, then set the box to the mean volume of the second half."""
    import openmm.unit as unit

    volumes = []
    done = 0
    while done < steps:
        chunk = min(VOLUME_SAMPLE_STEPS, steps - done)
        integrator.step(chunk)
        done += chunk
        if done > steps // 2:
            volumes.append(context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer**3))
        report(chunk * TIMESTEP_PS)
    state = context.getState(getPositions=True)
    box = np.array(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    scale = (np.mean(volumes) / abs(np.linalg.det(box))) ** (1 / 3)
    for residue in topology.residues():  # move each molecule rigidly with its centre
        atoms = [a.index for a in residue.atoms()]
        positions[atoms] += (scale - 1) * positions[atoms].mean(axis=0)
    context.setPeriodicBoxVectors(*(box * scale))
    context.setPositions(positions)


def _labelled_frame(context, numbers: np.ndarray) -> Frame:
    """The current state as a frame: positions wrapped into the cell (Å), forces eV/Å, energy eV."""
    import openmm.unit as unit

    state = context.getState(getPositions=True, getForces=True, getEnergy=True)
    cell = np.array(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer)) * 10.0
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10.0
    fractional = positions @ np.linalg.inv(cell)
    positions = (fractional - np.floor(fractional)) @ cell
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
    return Frame(numbers, positions, cell, np.array([True] * 3), np.asarray(forces, dtype=float), float(energy))
