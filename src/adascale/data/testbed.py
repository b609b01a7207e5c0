"""The NaCl(aq) testbed: seeded, cached OpenMM trajectories of SPC/E water + NaCl.

Recipe per replica: ``addSolvent`` fills a cubic box with SPC/E water (``amber14/spce.xml``),
randomly chosen waters are replaced by Na+ and Cl- (seeded), the energy is minimised, then
Langevin dynamics (2 fs, rigid water, PME with a 0.9 nm cutoff) equilibrates at 1 bar with a
Monte Carlo barostat. The equilibrated volume V0 is the mean volume of the second half of the
equilibration; the barostat is then removed and frames are sampled NVT every ``stride_ps``.

Densities. A barostat samples how the energy changes with the volume, which frames at one
volume never show, so by default each replica samples at ``volume_levels`` volumes evenly
spanning V0 (1 ± ``volume_span``) (default 7 levels over 0.94-1.06 V0, steps of 2 %): from the
equilibrated state it scales the box to each volume (molecules moved rigidly with their centres,
as the barostat does), re-equilibrates NVT for ``level_equil_ps`` and samples that level's frames.
Scaled boxes rather than NPT at several pressures: the volumes are known and spread evenly
(water's compressibility would need ±1,300 bar for ±6 %, and NPT volumes fluctuate), and the
cost is the same NVT sampling plus 2 ps per level (+14 ps per replica). ``volume_span`` 0
keeps the single-volume sampling (no level re-equilibration). Each frame records its level's
factor in ``volume_factor``.

Order. Splits are contiguous blocks (:mod:`adascale.data.split`), so within a replica the
frames cycle through the levels (frame k is from level k mod L, the (k // L)-th frame of that
level's trajectory): every block of at least L frames holds every density, and a later block
holds later frames of every level's trajectory (no time leak between train and test).

Labels are OpenMM's full forces and potential energy in eV/Å and eV, and the stress
``REF_stress`` (eV/Å³, ASE's convention, the dispersion correction included; its part alone in
``REF_stress_dispersion``) by finite differences of the energy (:mod:`adascale.data.openmm_stress`);
positions are wrapped into the cell atom by atom, so molecules may be split across its
faces (re-evaluate them with ``NonbondedForce.setExceptionsUsePeriodicBoundaryConditions(True)``).
With ``labels="amoeba"`` the same sampled frames (cached once) are relabelled with AMOEBA's
multipole + vdW forces (:mod:`adascale.data.amoeba`), cached under their own name; those frames
carry no stress.

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
from adascale.data.openmm_stress import StressLabeller
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
GENERATOR_VERSION = 2  # 2: densities across volume levels, stress labels
LABELS = ("spce", "amoeba")

ProgressCallback = Callable[[float], None]  # called with simulated picoseconds just completed


@dataclass(frozen=True)
class NaClSettings:
    """Everything that determines a generated testbed (and hence its cache key).

    frames: total over all replicas (replica r gets an equal share, the first ones one more).
    equil_ps: NPT equilibration per replica. The default 20 ps lets the barostat remove the
    6-8 % under-density of the fresh solvent box (it settles within ~10 ps) and then averages the
    volume over the last 10 ps; 0 skips equilibration and samples at the requested box.
    volume_span, volume_levels: sample at ``volume_levels`` volumes evenly spanning the
    equilibrated volume times 1 ± volume_span (0: one volume, the old sampling).
    level_equil_ps: NVT re-equilibration after scaling the box to each level's volume.
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
    volume_span: float = 0.06
    volume_levels: int = 7
    level_equil_ps: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.volume_span < 0.5:
            raise AdaScaleError(f"--volume-span must be in [0, 0.5), got {self.volume_span:g}")
        if self.volume_span > 0 and self.volume_levels < 2:
            raise AdaScaleError(f"--volume-levels must be at least 2 when --volume-span > 0, got {self.volume_levels}")
        if self.level_equil_ps < 0:
            raise AdaScaleError(f"--level-equil-ps must not be negative, got {self.level_equil_ps:g}")
        # the smallest level scales the equilibrated box by (1 - span)^(1/3) on top of the barostat's compression
        smallest_box = round(2 * PME_CUTOFF_NM * BOX_MARGIN / (1 - self.volume_span) ** (1 / 3), 2)
        if self.frames < 1:
            raise AdaScaleError(f"--frames must be at least 1, got {self.frames}")
        if self.box_nm < smallest_box:
            raise AdaScaleError(
                f"--box-nm {self.box_nm:g} is too small: the box must be at least {smallest_box:.2f} nm, twice the "
                f"{PME_CUTOFF_NM} nm PME cutoff plus {BOX_MARGIN - 1:.0%} room for the barostat to compress it"
                + (f" and room for the smallest volume level ({1 - self.volume_span:g} V)" if self.volume_span else "")
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

    @property
    def level_equil_steps(self) -> int:
        """Re-equilibration steps per volume level (none for single-volume sampling)."""
        return round(self.level_equil_ps / TIMESTEP_PS) if self.volume_span else 0

    def volume_factors(self) -> np.ndarray:
        """(L,) volumes of the levels as multiples of the equilibrated volume."""
        if not self.volume_span:
            return np.ones(1)
        return np.linspace(1 - self.volume_span, 1 + self.volume_span, self.volume_levels)

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


def simulated_time_progress(enabled: bool = True):
    """A rich Progress whose bars count simulated picoseconds, with elapsed time and ETA (every MD phase
    adascale runs: the testbed's replicas, validation's NPT and NVT runs)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} ps"))
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def _simulate(settings: NaClSettings, threads_per_replica: int, progress: bool) -> list[Frame]:
    """All replicas' frames in replica order, with a progress bar in simulated picoseconds."""
    levels = [min(len(settings.volume_factors()), n) for n in settings.replica_frames()]
    total_ps = settings.replicas * settings.equil_ps + sum(levels) * settings.level_equil_steps * TIMESTEP_PS
    total_ps += settings.frames * settings.stride_ps
    with simulated_time_progress(progress) as bar:
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
    labeller = StressLabeller(system, threads)

    numbers = np.array([atom.element.atomic_number for atom in topology.atoms()], dtype=np.int64)
    factors = settings.volume_factors()
    counts = [len(range(k, settings.replica_frames()[replica], len(factors))) for k in range(len(factors))]
    equilibrated = context.getState(getPositions=True, getVelocities=True)
    volume = equilibrated.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)
    levels = []
    for factor, count in zip(factors, counts):
        if count == 0:
            continue
        if len(factors) > 1:  # from the equilibrated state, scaled to this level's volume
            context.setState(equilibrated)
            _scale_volume(context, topology, factor * volume)
            integrator.step(settings.level_equil_steps)
            report(settings.level_equil_steps * TIMESTEP_PS)
        frames = []
        for _ in range(count):
            integrator.step(settings.stride_steps)
            frames.append(_labelled_frame(context, numbers, labeller))
            frames[-1].info["volume_factor"] = float(factor)
            report(settings.stride_ps)
        levels.append(frames)
    return [level[k] for k in range(max(counts)) for level in levels if k < len(level)]  # cycle through the levels


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
    _scale_volume(context, topology, float(np.mean(volumes)))


def _scale_volume(context, topology, volume_nm3: float) -> None:
    """Scale the box isotropically to ``volume_nm3``, each molecule moved rigidly with its centre."""
    import openmm.unit as unit

    state = context.getState(getPositions=True)
    box = np.array(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    scale = (volume_nm3 / abs(np.linalg.det(box))) ** (1 / 3)
    for residue in topology.residues():  # move each molecule rigidly with its centre
        atoms = [a.index for a in residue.atoms()]
        positions[atoms] += (scale - 1) * positions[atoms].mean(axis=0)
    context.setPeriodicBoxVectors(*(box * scale))
    context.setPositions(positions)


def _labelled_frame(context, numbers: np.ndarray, labeller: StressLabeller) -> Frame:
    """The current state as a frame: positions wrapped into the cell (Å), forces eV/Å, energy eV, stress eV/Å³."""
    import openmm.unit as unit

    state = context.getState(getPositions=True, getForces=True, getEnergy=True)
    box_nm = np.array(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    whole_nm = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    stress = labeller.stress(whole_nm, box_nm)  # molecules whole, as the dynamics keeps them
    dispersion = labeller.dispersion_stress(whole_nm, box_nm)
    cell, positions = box_nm * 10.0, whole_nm * 10.0
    fractional = positions @ np.linalg.inv(cell)
    positions = (fractional - np.floor(fractional)) @ cell
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KJ_MOL_NM_PER_EV_A
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV
    info = {"REF_stress_dispersion": dispersion}
    return Frame(numbers, positions, cell, np.array([True] * 3), np.asarray(forces, dtype=float), float(energy), info, stress)
