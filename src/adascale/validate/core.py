"""``validate_model``: the model's MD observables beside the reference force field's, same state, protocol and seeds.

Four phases of MD, each from the starting frame with the same seeded velocities: reference NPT
(its mean density sets the NVT box), reference NVT, model NPT, model NVT (at the reference's
density). The reference runs depend only on the state, the protocol and the starting frame and
are cached, so a second model costs only its own MD. The model's runs catch every failure
(an exception or a NaN ends the run) and every collapse criterion (an approach closer than the
reference ever shows, a stability window whose water-RDF error exceeds the threshold: the run
goes on, so its observables are still measured) and report the first as the simulated time
before collapse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes
from adascale.validate import analysis
from adascale.validate.report import assemble
from adascale.validate.settings import ValidateSettings
from adascale.validate.simulate import reference_system, run_phase

REFERENCE_SPECIES = {1, 8, 11, 17}  # what the testbed force field (SPC/E + Joung-Cheatham) describes
MIN_BOX_A = 2 * 9.0 * 1.05  # twice the reference's 0.9 nm PME cutoff, with room for the barostat


def default_cache_dir() -> Path:
    """``~/.cache/adascale/validate``, resolved when called (no environment is changed)."""
    return Path("~/.cache/adascale/validate").expanduser()


@dataclass
class Start:
    """The starting frame, checked: atoms, waters (W, 3), molecule label per atom, whole positions (n, 3) Å, box (3,) Å."""

    atoms: object
    waters: np.ndarray
    molecule: np.ndarray
    positions: np.ndarray
    box: np.ndarray
    velocities: np.ndarray  # (n, 3) Å/fs, seeded Maxwell-Boltzmann, constrained
    digest: str

    @property
    def numbers(self) -> np.ndarray:
        return self.atoms.numbers

    @property
    def is_water(self) -> np.ndarray:
        return self.molecule < len(self.waters)

    def at_density(self, density: float, current: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, box) with the box scaled to ``density`` g/cm³ from ``current``; molecules move rigidly with their centres."""
        scale = (current / density) ** (1 / 3)
        centres = np.array([self.positions[self.molecule == m].mean(axis=0) for m in range(self.molecule.max() + 1)])
        return self.positions + (scale - 1) * centres[self.molecule], self.box * scale


def check_start(frame, settings: ValidateSettings, where: str = "starting frame") -> Start:
    """The starting frame as a :class:`Start`; one-line errors for what neither potential can run."""
    from adascale.deploy.md import start_velocities
    from adascale.deploy.rigid_water import find_waters, whole_waters

    atoms = frame.to_atoms()
    cell = np.asarray(atoms.cell)
    if not np.asarray(atoms.pbc).all() or abs(np.linalg.det(cell)) < 1e-9:
        raise AdaScaleError(f"{where}: no periodic cell (NPT and RDFs need a cell periodic in 3D)")
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-6:
        raise AdaScaleError(f"{where}: the cell is not orthorhombic; validation runs the testbed's rectangular boxes only")
    if np.diag(cell).min() < MIN_BOX_A:
        raise AdaScaleError(
            f"{where}: box edge {np.diag(cell).min():.2f} Å is below {MIN_BOX_A:.1f} Å, twice the reference's PME cutoff (0.9 nm) plus room for the barostat"
        )
    unknown = set(np.unique(atoms.numbers).tolist()) - REFERENCE_SPECIES
    if unknown:
        raise AdaScaleError(f"{where}: atomic number(s) {sorted(unknown)}: the reference force field knows only H, O, Na and Cl")
    waters = find_waters(atoms)
    in_water = np.zeros(len(atoms), dtype=bool)
    in_water[waters.ravel()] = True
    if (atoms.numbers[~in_water] <= 8).any():
        raise AdaScaleError(f"{where}: some O or H atoms are not part of an intact water")
    molecule = np.empty(len(atoms), dtype=int)
    molecule[waters.ravel()] = np.repeat(np.arange(len(waters)), 3)
    molecule[~in_water] = len(waters) + np.arange((~in_water).sum())
    positions = whole_waters(atoms, waters)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (atoms.numbers, positions, cell))).hexdigest()
    velocities = start_velocities(atoms.copy(), settings.state.temperature_K, np.random.default_rng(settings.protocol.seed))
    return Start(atoms, waters, molecule, positions, np.diag(cell).copy(), velocities, digest)


Progress = Callable[[str, float], Callable[[float], None]]  # (phase label, total ps) -> advance(ps)


def _no_progress(label: str, total: float) -> Callable[[float], None]:
    return lambda ps: None


def reference_runs(start: Start, settings: ValidateSettings, cache_dir: Path | None, progress: Progress = _no_progress) -> dict:
    """The reference's NPT and NVT runs as arrays (cached under the key of state, protocol and frame)."""
    path = (cache_dir or default_cache_dir()) / f"reference-{settings.reference_key(start.digest)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    protocol = settings.protocol
    closest: dict[str, float] = {}

    def record(xyz: np.ndarray, lengths: np.ndarray) -> None:
        for pair, distance in analysis.closest_approach(xyz, lengths, start.molecule, start.atoms.numbers).items():
            closest[pair] = min(closest.get(pair, np.inf), distance)

    system, topology = reference_system(start.atoms, start.waters)
    advance = progress("reference NPT", protocol.npt_steps * protocol.step_ps)
    npt = run_phase(
        system, topology, start.positions, start.velocities, start.box, settings,
        npt=True, steps=protocol.npt_steps, keep_positions=False, check=record, advance=advance,
    )  # fmt: skip
    density = _production_density(npt.time_ps, npt.density, protocol.npt_equil_ps)
    nvt = _nvt(
        start, settings, reference_system(start.atoms, start.waters), density, npt.density[0], record, progress, "reference"
    )
    arrays = {f"npt_{key}": value for key, value in npt.arrays().items() if key != "positions"}
    arrays |= {f"nvt_{key}": value for key, value in nvt.arrays().items()}
    arrays["closest_pairs"], arrays["closest"] = np.array(list(closest), dtype=str), np.array(list(closest.values()))
    atomic_write_bytes(path, lambda file: np.savez(file, **arrays))
    return arrays


def _nvt(start: Start, settings, built, density: float, start_density: float, check, progress: Progress, who: str, catch=False):
    protocol = settings.protocol
    positions, box = start.at_density(density, start_density)
    advance = progress(f"{who} NVT", protocol.nvt_steps * protocol.step_ps)
    return run_phase(
        *built, positions, start.velocities, box, settings,
        npt=False, steps=protocol.nvt_steps, keep_positions=True, check=check, advance=advance, catch=catch,
    )  # fmt: skip


def _production_density(times, density, equil_ps: float) -> float:
    """Mean density (g/cm³) over the production samples of an NPT trace."""
    return float(np.asarray(density)[analysis.production(times, equil_ps)].mean())


def model_system(start: Start, potential):
    """(system, topology) of the model for ``start``: the ``PythonForce`` system of ``adascale md --engine openmm`` (SETTLE)."""
    from adascale.deploy.openmm_engine import build_system

    atoms = start.atoms.copy()
    atoms.positions = start.positions
    system, topology, _ = build_system(atoms, potential)
    return system, topology


def validate_potential(
    potential, start: Start, settings: ValidateSettings, cache_dir: Path | None = None, progress: Progress = _no_progress
) -> dict:
    """The validation report (validate.json's content) of ``potential`` (a :class:`~adascale.deploy.potential.Potential`)."""
    protocol = settings.protocol
    reference = reference_runs(start, settings, cache_dir, progress)
    closest = dict(zip(reference["closest_pairs"].tolist(), reference["closest"].tolist()))

    def check(xyz: np.ndarray, lengths: np.ndarray) -> str | None:
        """The first species pair of two molecules closer than approach_factor x the reference's closest of that pair
        (pairs the reference never brought within reach are not judged)."""
        for pair, distance in analysis.closest_approach(xyz, lengths, start.molecule, start.atoms.numbers).items():
            if pair in closest and distance < protocol.approach_factor * closest[pair]:
                return f"intermolecular {pair} approach {distance:.2f} Å, below {protocol.approach_factor:g} x the reference's closest ({closest[pair]:.2f} Å)"
        return None

    advance = progress("model NPT", protocol.npt_steps * protocol.step_ps)
    npt = run_phase(
        *model_system(start, potential), start.positions, start.velocities, start.box, settings,
        npt=True, steps=protocol.npt_steps, keep_positions=False, check=check, advance=advance, catch=True,
    )  # fmt: skip
    reference_density = _production_density(reference["npt_time_ps"], reference["npt_density"], protocol.npt_equil_ps)
    nvt = _nvt(
        start,
        settings,
        model_system(start, potential),
        reference_density,
        reference["npt_density"][0],
        check,
        progress,
        "model",
        catch=True,
    )
    report = assemble(
        start, settings, reference, npt.arrays(), nvt.arrays(), (npt.collapse, npt.collapse_ps), (nvt.collapse, nvt.collapse_ps)
    )
    report["stability"]["md_failed"] = npt.failed or nvt.failed  # the MD itself stopped (observables from what ran)
    return report


def validate_model(
    model_dir: str | Path,
    frame,
    settings: ValidateSettings,
    out_dir: str | Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    dtype: str = "float32",
    where: str = "starting frame",
) -> dict:
    """Validate the model in ``model_dir`` from ``frame`` (a :class:`~adascale.data.frames.Frame`);
    write validate.json, validate.md and plots to ``out_dir`` (if given) and return the report.
    Every input check (model, frame, species, settings) comes before any MD; files only at the end."""
    from adascale.deploy.calculator import load_model
    from adascale.deploy.potential import Potential
    from adascale.validate.report import write_outputs

    potential = Potential(load_model(model_dir), dtype=dtype)
    start = check_start(frame, settings, where)
    missing = set(np.unique(start.numbers).tolist()) - potential.species
    if missing:
        raise AdaScaleError(
            f"{model_dir}: the model knows atomic numbers {sorted(potential.species)}, but the starting frame has {sorted(missing)} too"
        )
    with rich_progress(progress) as bars:
        report = validate_potential(potential, start, settings, cache_dir, bars)
    report["model"] = str(model_dir)
    if out_dir is not None:
        write_outputs(report, Path(out_dir))
    return report


class rich_progress:
    """A rich display with one bar per MD phase, in simulated ps, with elapsed time and ETA."""

    def __init__(self, enabled: bool) -> None:
        from adascale.data.testbed import simulated_time_progress

        self.bar = simulated_time_progress(enabled)

    def __enter__(self) -> Progress:
        self.bar.__enter__()

        def phase(label: str, total: float) -> Callable[[float], None]:
            task = self.bar.add_task(label, total=total)
            return lambda ps: self.bar.advance(task, ps)

        return phase

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)
