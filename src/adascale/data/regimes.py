"""Per-atom regimes: nearest-ion distance d_i and the report subsets.

Subsets (docs/concepts.md, "Samples, losses and subsets"): ``all``; ``ions`` (atoms of an ion species); ``close_contact``
(ions whose nearest *other* ion is closer than ``close_contact_nm``). Water atoms keep
their d_i for distance curves but are never in ``close_contact``.
"""

from __future__ import annotations

import numpy as np

from adascale.units import NM_PER_A

DEFAULT_ION_SPECIES: tuple[int, ...] = (11, 17)  # Na, Cl
DEFAULT_CLOSE_CONTACT_NM = 0.6
ALL, IONS, CLOSE_CONTACT = "all", "ions", "close_contact"
#: The report subsets, in report order: every report, table and trainer metric names them from here.
SUBSETS: tuple[str, ...] = (ALL, IONS, CLOSE_CONTACT)


def nearest_ion_distance(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES,
) -> np.ndarray:
    """Minimum-image distance (nm) from every atom to the nearest ion other than itself.

    positions (n, 3) Å, cell (3, 3) Å (rows are lattice vectors), pbc (3,) bool.
    Returns (n,) in nm; NaN where the frame has no other ion. Exact for any triclinic
    cell: the image search covers every lattice translation that can beat the
    wrapped vector (enough shells for skewed cells).
    """
    positions = np.asarray(positions, dtype=float)
    numbers = np.asarray(numbers)
    n = len(positions)
    out = np.full(n, np.nan)
    ion_idx = np.flatnonzero(np.isin(numbers, ion_species))
    if len(ion_idx) == 0 or n == 0:
        return out
    delta = positions[:, None, :] - positions[None, ion_idx, :]  # (n, m, 3)
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=float)
    if pbc.any():
        delta = _minimum_image(delta, cell, pbc)
    dist = np.linalg.norm(delta, axis=-1)  # (n, m) Å
    dist[ion_idx, np.arange(len(ion_idx))] = np.inf  # an ion is not its own nearest ion
    best = dist.min(axis=1)
    best[~np.isfinite(best)] = np.nan
    return best * NM_PER_A


def _minimum_image(delta: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Shortest periodic image of each displacement (..., 3) Å under a triclinic cell."""
    inv = np.linalg.inv(cell)
    frac = delta @ inv
    frac[..., pbc] -= np.round(frac[..., pbc])
    wrapped = frac @ cell
    # Search neighbouring images: rounding in fractional space is only exact for
    # orthorhombic cells, so try shifts of -2..2 along periodic axes and keep the shortest.
    ranges = [range(-2, 3) if p else range(0, 1) for p in pbc]
    shifts = np.array([[a, b, c] for a in ranges[0] for b in ranges[1] for c in ranges[2]], dtype=float)
    candidates = wrapped[..., None, :] + shifts @ cell  # (..., S, 3)
    norms = np.einsum("...si,...si->...s", candidates, candidates)
    pick = norms.argmin(axis=-1)
    return np.take_along_axis(candidates, pick[..., None, None], axis=-2)[..., 0, :]


def subset_masks(
    species: np.ndarray,
    d_ion_nm: np.ndarray,
    ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES,
    close_contact_nm: float = DEFAULT_CLOSE_CONTACT_NM,
) -> dict[str, np.ndarray]:
    """Boolean masks (N,) for the report subsets ``all``, ``ions`` and ``close_contact``."""
    species = np.asarray(species)
    d = np.asarray(d_ion_nm, dtype=float)
    is_ion = np.isin(species, ion_species)
    with np.errstate(invalid="ignore"):
        close = is_ion & (d < close_contact_nm)
    return {ALL: np.ones(len(species), dtype=bool), IONS: is_ion, CLOSE_CONTACT: close}
