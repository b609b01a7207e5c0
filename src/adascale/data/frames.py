"""Frames: reading, validating and writing labelled configurations.

A :class:`Frame` is one configuration in ASE units (Å, eV, eV/Å). Frames come from any file
ASE reads (extxyz, ASE db, trajectory, ...). Labels are looked up under configurable keys
(default ``REF_forces`` / ``REF_energy`` / ``REF_stress``), falling back to plain ``forces`` /
``energy`` / ``stress`` (including values held by a SinglePointCalculator). The stress is
optional: eV/Å³, ASE's convention ((1/V) dE/dε for a homogeneous strain ε of the cell and all
atoms), read as a 3x3 matrix, 9 values or 6 Voigt values (xx, yy, zz, yz, xz, xy). Every problem with the input becomes
one :class:`~adascale.errors.AdaScaleError` line naming the file, frame and field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ase
import ase.io
import numpy as np

from adascale.errors import AdaScaleError, located
from adascale.files import atomic_output

DEFAULT_FORCES_KEY = "REF_forces"
DEFAULT_ENERGY_KEY = "REF_energy"
DEFAULT_STRESS_KEY = "REF_stress"
FALLBACK_FORCES_KEY = "forces"
FALLBACK_ENERGY_KEY = "energy"
FALLBACK_STRESS_KEY = "stress"


@dataclass
class Frame:
    """One configuration with optional reference labels.

    ``info`` carries free-form metadata (e.g. the generation settings) through read/write
    round trips; the labels never live in it.
    """

    numbers: np.ndarray  # (n,) int64 atomic numbers
    positions: np.ndarray  # (n, 3) float64, Å
    cell: np.ndarray  # (3, 3) float64, Å, rows are lattice vectors (zeros for a molecule)
    pbc: np.ndarray  # (3,) bool
    forces: np.ndarray | None  # (n, 3) float64 reference forces, eV/Å; None when unlabelled
    energy: float | None  # reference energy, eV
    info: dict = field(default_factory=dict)
    stress: np.ndarray | None = None  # (3, 3) reference stress, eV/Å³ (ASE's sign); None when unlabelled

    def __len__(self) -> int:
        return len(self.numbers)

    def to_atoms(self) -> ase.Atoms:
        """ASE atoms with labels stored as ``REF_forces`` (array), ``REF_energy`` and ``REF_stress`` (3x3, info)."""
        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        if self.forces is not None:
            atoms.arrays[DEFAULT_FORCES_KEY] = np.array(self.forces, dtype=float)
        if self.energy is not None:
            atoms.info[DEFAULT_ENERGY_KEY] = float(self.energy)
        if self.stress is not None:
            atoms.info[DEFAULT_STRESS_KEY] = np.array(self.stress, dtype=float)
        return atoms

    @classmethod
    def from_atoms(
        cls,
        atoms: ase.Atoms,
        forces_key: str = DEFAULT_FORCES_KEY,
        energy_key: str = DEFAULT_ENERGY_KEY,
        require_forces: bool = True,
        *,
        stress_key: str = DEFAULT_STRESS_KEY,
        path: object = None,
        index: int | None = None,
    ) -> Frame:
        """Validated frame from ASE atoms; ``path``/``index`` only locate error messages."""
        n = len(atoms)
        if n == 0:
            raise located("frame has no atoms", path=path, frame=index)
        positions = _checked_array(atoms.get_positions(), (n, 3), "positions", path, index)
        cell = _checked_array(np.array(atoms.get_cell()), (3, 3), "cell", path, index)
        pbc = np.array(atoms.get_pbc(), dtype=bool)
        if np.any(np.linalg.norm(cell[pbc], axis=1) == 0):
            raise located(
                f"periodic along {_axes(pbc)} but the cell has a zero lattice vector", path=path, frame=index, field="cell"
            )
        forces_found = _lookup(atoms, atoms.arrays, forces_key, FALLBACK_FORCES_KEY)
        if forces_found is None:
            if require_forces:
                raise located(f"no forces found; keys present: {_keys_present(atoms)}", path=path, frame=index, field=forces_key)
            forces = None
        else:
            key, values = forces_found
            forces = _checked_array(values, (n, 3), key, path, index)
        energy_found = _lookup(atoms, atoms.info, energy_key, FALLBACK_ENERGY_KEY)
        energy = None
        if energy_found is not None:
            key, value = energy_found
            energy = _checked_scalar(value, key, path, index)
        stress_found = _lookup(atoms, atoms.info, stress_key, FALLBACK_STRESS_KEY)
        stress = None if stress_found is None else _checked_stress(*stress_found, path, index)
        labels = (energy_key, FALLBACK_ENERGY_KEY, stress_key, FALLBACK_STRESS_KEY)
        info = {k: v for k, v in atoms.info.items() if k not in labels}
        return cls(
            numbers=np.array(atoms.numbers, dtype=np.int64),
            positions=positions,
            cell=cell,
            pbc=pbc,
            forces=forces,
            energy=energy,
            info=info,
            stress=stress,
        )


def read_frames(
    path: str | os.PathLike,
    *,
    forces_key: str = DEFAULT_FORCES_KEY,
    energy_key: str = DEFAULT_ENERGY_KEY,
    stress_key: str = DEFAULT_STRESS_KEY,
    require_forces: bool = True,
) -> list[Frame]:
    """Read and validate every frame of a file in any format ASE reads."""
    path = Path(path)
    if not path.exists():
        raise located("file not found", path=path)
    if path.is_file() and path.stat().st_size == 0:
        raise located("file is empty", path=path)
    try:
        images = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises many exception types for unreadable files
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise located(f"cannot read frames ({message})", path=path) from None
    if isinstance(images, ase.Atoms):
        images = [images]
    if len(images) == 0:
        raise located("file contains no frames", path=path)
    return [
        Frame.from_atoms(atoms, forces_key, energy_key, require_forces, stress_key=stress_key, path=path, index=i)
        for i, atoms in enumerate(images)
    ]


def write_frames(path: str | os.PathLike, frames: Sequence[Frame], *, info: dict | None = None) -> None:
    """Write frames as extended XYZ, atomically (a temp file in the same folder, then rename).

    ``info`` (scalars or short strings, e.g. the generation settings) is stored in every frame.
    """
    path = Path(path)
    if len(frames) == 0:
        raise AdaScaleError(f"{path}: refusing to write a file with no frames")
    images = []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.info.update(info or {})
        images.append(atoms)
    with atomic_output(path) as tmp:
        ase.io.write(tmp, images, format="extxyz")


def periodic_widths(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Width (Å) of the periodic lattice along each periodic axis, in axis order.

    For a periodic axis k it is the length of lattice vector a_k's component orthogonal to the
    other *periodic* lattice vectors: the perpendicular cell width when all three axes are
    periodic, |a_1 x a_2| / |a_2| for a slab, |a_1| for a wire. Every nonzero lattice
    translation is at least as long as the smallest width.
    """
    cell = np.asarray(cell, dtype=float)
    periodic = np.flatnonzero(pbc)
    widths = []
    for k in periodic:
        others = cell[[m for m in periodic if m != k]]
        vector = cell[k]
        if len(others):
            coeffs, *_ = np.linalg.lstsq(others.T, vector, rcond=None)
            vector = vector - others.T @ coeffs
        widths.append(float(np.linalg.norm(vector)))
    return np.array(widths)


def check_cutoff(frame: Frame, cutoff: float, *, path: object = None, index: int | None = None) -> None:
    """Refuse a periodic cell narrower than twice the cutoff along any periodic axis.

    The rule is the minimum-image convention that OpenMM also enforces: with every width
    at least 2 * cutoff, each pair of atoms is within the cutoff through at most one
    periodic image, so a model sees what the reference force field saw. vesin itself
    would list several images of a pair (or an atom's own image) in a smaller cell; that
    is almost always a mistake for the liquids and molecules adascale targets.
    """
    widths = periodic_widths(frame.cell, frame.pbc)
    if len(widths) and widths.min() < 2 * cutoff:
        axis = "abc"[np.flatnonzero(frame.pbc)[widths.argmin()]]
        raise located(
            f"cell too small for cutoff {cutoff:g} Å: width {widths.min():.3f} Å along {axis} is below "
            f"twice the cutoff ({2 * cutoff:g} Å); use a cutoff of at most {widths.min() / 2:.3f} Å or a larger cell",
            path=path,
            frame=index,
            field="cell",
        )


def _lookup(atoms: ase.Atoms, store: dict, key: str, fallback: str) -> tuple[str, object] | None:
    """(name, value) of ``key`` or else ``fallback``, from ``store`` (arrays or info) or the calculator."""
    for name in dict.fromkeys((key, fallback)):
        if name in store:
            return name, store[name]
        if atoms.calc is not None and name in atoms.calc.results:
            return name, atoms.calc.results[name]
    return None


def _checked_array(values: object, shape: tuple[int, int], name: str, path: object, index: int | None) -> np.ndarray:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise located("is not numeric", path=path, frame=index, field=name) from None
    if array.shape != shape:
        raise located(f"has shape {array.shape}, expected {shape}", path=path, frame=index, field=name)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise located(f"contains NaN or inf (first at {tuple(int(b) for b in bad)})", path=path, frame=index, field=name)
    return array


def _checked_stress(key: str, values: object, path: object, index: int | None) -> np.ndarray:
    """(3, 3) stress from a 3x3 matrix, 9 values or 6 Voigt values (xx, yy, zz, yz, xz, xy)."""
    flat = np.ravel(np.asarray(values, dtype=object))
    if flat.size == 6:
        xx, yy, zz, yz, xz, xy = flat
        values = [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]
    elif flat.size == 9:
        values = np.reshape(flat, (3, 3))
    return _checked_array(values, (3, 3), key, path, index)


def _checked_scalar(value: object, name: str, path: object, index: int | None) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise located(f"is not a number ({value!r})", path=path, frame=index, field=name) from None
    if not np.isfinite(number):
        raise located("is NaN or inf", path=path, frame=index, field=name)
    return number


def _keys_present(atoms: ase.Atoms) -> str:
    keys = [k for k in atoms.arrays if k not in ("numbers", "positions")] + list(atoms.info)
    if atoms.calc is not None:
        keys += list(atoms.calc.results)
    return ", ".join(dict.fromkeys(keys)) or "none"


def _axes(pbc: np.ndarray) -> str:
    return "".join("abc"[k] for k in np.flatnonzero(pbc))
