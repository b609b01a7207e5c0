"""Neighbour lists through vesin, built once per frame at the largest cutoff.

Smaller scales reuse the list through :meth:`NeighbourList.within` instead of
rebuilding it. Works for periodic triclinic cells, mixed periodicity (slabs, wires) and
non-periodic molecules (cell of zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adascale.data.frames import Frame, periodic_widths
from adascale.errors import AdaScaleError


@dataclass
class NeighbourList:
    """A full neighbour list: both (i, j) and (j, i) are present, sorted by (i, j, shift).

    r_ij = positions[j] - positions[i] + shifts @ cell, with |r_ij| = distances < cutoff.
    """

    i: np.ndarray  # (E,) int64 centre atoms
    j: np.ndarray  # (E,) int64 neighbour atoms
    shifts: np.ndarray  # (E, 3) int64 cell shifts
    distances: np.ndarray  # (E,) float64, Å
    cutoff: float  # Å

    def __len__(self) -> int:
        return len(self.i)

    def within(self, cutoff: float) -> NeighbourList:
        """The pairs closer than a smaller ``cutoff`` (Å), without recomputing."""
        if cutoff > self.cutoff:
            raise AdaScaleError(f"cannot filter a neighbour list built at {self.cutoff:g} Å to a larger cutoff {cutoff:g} Å")
        keep = self.distances < cutoff
        return NeighbourList(self.i[keep], self.j[keep], self.shifts[keep], self.distances[keep], float(cutoff))


def neighbour_list(frame: Frame, cutoff: float) -> NeighbourList:
    """All pairs (including periodic images) closer than ``cutoff`` Å, via vesin.

    Any cell size is handled (several images of a pair are listed when the cell is small;
    use :func:`adascale.data.frames.check_cutoff` to refuse such cells). A periodic axis
    with a degenerate lattice is an error.
    """
    from vesin import NeighborList

    if not cutoff > 0:
        raise AdaScaleError(f"neighbour-list cutoff must be positive, got {cutoff!r}")
    pbc = np.asarray(frame.pbc, dtype=bool)
    if pbc.any() and periodic_widths(frame.cell, pbc).min() <= 0:
        raise AdaScaleError("cannot build a neighbour list: the periodic lattice is degenerate (zero width)")
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, distances = calculator.compute(
        np.asarray(frame.positions, dtype=np.float64),
        np.asarray(frame.cell, dtype=np.float64),
        pbc,
        quantities="ijSd",
    )
    keep = np.flatnonzero(distances < cutoff)
    # A canonical order, so that a list filtered by `within` equals a fresh one.
    order = keep[np.lexsort((shifts[keep, 2], shifts[keep, 1], shifts[keep, 0], j[keep], i[keep]))]
    return NeighbourList(
        i=i[order].astype(np.int64),
        j=j[order].astype(np.int64),
        shifts=shifts[order].astype(np.int64),
        distances=distances[order].astype(np.float64),
        cutoff=float(cutoff),
    )
