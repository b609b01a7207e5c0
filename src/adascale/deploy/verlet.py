"""A Verlet neighbour list: built at cutoff + skin, reused while no atom has moved more than skin / 2.

Why it is exact: if every atom moved less than skin / 2 since the list was built, any pair now
closer than the cutoff was closer than cutoff + skin then, so the stored list still holds it;
:meth:`adascale.models.batch.AtomsBatch.within` then keeps exactly the pairs a fresh list at the
cutoff would hold (same pairs, same (i, j, shift) order). Positions are used as given, never
wrapped between rebuilds: vesin's cell shifts refer to these positions, so an atom that leaves
the cell keeps its shifts valid. A change of species, cell or periodicity rebuilds the list.
"""

from __future__ import annotations

import numpy as np

from adascale.data.frames import Frame
from adascale.data.neighbours import NeighbourList, neighbour_list


class VerletList:
    """Neighbour lists at ``cutoff + skin`` (Å) for a sequence of nearby configurations.

    ``rebuilds`` counts how often vesin ran (for benchmarks and tests); ``skin = 0`` rebuilds
    every call (a fresh list each time).
    """

    def __init__(self, cutoff: float, skin: float = 1.0) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.rebuilds = 0
        self._pairs: NeighbourList | None = None
        self._key: tuple | None = None
        self._reference: np.ndarray | None = None

    @property
    def list_cutoff(self) -> float:
        """Å: the radius the stored list is built at."""
        return self.cutoff + self.skin

    def pairs(self, frame: Frame) -> NeighbourList:
        """The list at ``list_cutoff`` valid for ``frame`` (rebuilt only when it has to be)."""
        key = (frame.numbers.tobytes(), np.asarray(frame.cell, dtype=np.float64).tobytes(), np.asarray(frame.pbc).tobytes())
        if self._pairs is None or key != self._key or self._moved_too_far(frame.positions):
            self._pairs = neighbour_list(frame, self.list_cutoff)
            self._key = key
            self._reference = np.array(frame.positions, dtype=np.float64)
            self.rebuilds += 1
        return self._pairs

    def _moved_too_far(self, positions: np.ndarray) -> bool:
        if self.skin == 0.0:
            return True
        displacement = np.asarray(positions, dtype=np.float64) - self._reference
        return bool(np.einsum("ij,ij->i", displacement, displacement).max(initial=0.0) > (0.5 * self.skin) ** 2)
