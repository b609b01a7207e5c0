"""Rigid water for ASE: ``adascale.RigidWater(atoms)``, ASE's FixBondLengths made vectorised.

Why: the NaCl(aq) testbed's labels come from rigid SPC/E water, so its frames never show a
stretched or bent water and a model trained on them knows nothing about those motions. MD
must keep water rigid too. Each water is found by connectivity (an O with exactly two H
within ``bond_cutoff``) and its O–H, O–H and H–H distances are held fixed by RATTLE, which
removes 3 degrees of freedom per water.

ASE's own ``FixBondLengths`` does the same with a Python loop over pairs (about 90 % of an MD
step at 748 atoms); :class:`RigidWater` is a ``FixBondLengths`` whose sweeps run as array
operations, with the same iterates and the same tolerance test, so the two agree to
round-off (``tests/deploy`` checks it). Its ``todict`` is FixBondLengths', so trajectories
written with it read back anywhere.
"""

from __future__ import annotations

import numpy as np
from ase.constraints import FixBondLengths
from ase.geometry import find_mic

from adascale.errors import AdaScaleError

BOND_CUTOFF = 1.25  # Å: O–H bonds are ~1 Å, the nearest intermolecular O···H ~1.6 Å


def find_waters(atoms, bond_cutoff: float = BOND_CUTOFF) -> np.ndarray:
    """(W, 3) atom indices [O, H, H] of every water, found by connectivity.

    A water is an O with exactly two H closer than ``bond_cutoff`` Å (minimum image). An H
    bonded to several O, or an O with one or three H, is an error: the frame is not made of
    intact waters.
    """
    from adascale.data.frames import Frame
    from adascale.data.neighbours import neighbour_list

    frame = Frame(atoms.numbers, atoms.get_positions(), np.asarray(atoms.cell), np.asarray(atoms.pbc, bool), None, None)
    pairs = neighbour_list(frame, bond_cutoff)
    bonded = (atoms.numbers[pairs.i] == 8) & (atoms.numbers[pairs.j] == 1)
    oxygen, hydrogen = pairs.i[bonded], pairs.j[bonded]  # sorted by oxygen, then hydrogen
    if len(np.unique(hydrogen)) != len(hydrogen):
        raise AdaScaleError(f"rigid water: some H has several O within {bond_cutoff} Å; is this water?")
    oxygens, counts = np.unique(oxygen, return_counts=True)
    if (counts != 2).any():
        o, count = oxygens[counts != 2][0], counts[counts != 2][0]
        raise AdaScaleError(f"rigid water: O atom {o} has {count} H within {bond_cutoff} Å, expected 2")
    return np.column_stack([oxygens, hydrogen.reshape(-1, 2)]).astype(int).reshape(-1, 3)


def whole_waters(atoms, waters: np.ndarray) -> np.ndarray:
    """Positions (n, 3) Å with each water's H moved to the minimum image next to its O.

    Frames store positions wrapped into the cell, so a water may be split across a face;
    engines whose constraints are not periodic (OpenMM's SETTLE) need whole molecules.
    """
    positions = atoms.get_positions()
    if len(waters) and np.asarray(atoms.pbc).any():
        oxygen = positions[waters[:, [0, 0]]]  # (W, 2, 3)
        bonds = find_mic((positions[waters[:, 1:]] - oxygen).reshape(-1, 3), atoms.cell, atoms.pbc)[0]
        positions[waters[:, 1:]] = oxygen + bonds.reshape(-1, 2, 3)
    return positions


class RigidWater(FixBondLengths):
    """Every water of ``atoms`` held rigid (ASE constraint): ``atoms.set_constraint(RigidWater(atoms))``.

    ``waters`` (W, 3) [O, H, H] indices may be given instead of being found by connectivity.
    Bond lengths are those of ``atoms`` now. Pairs are ordered in three slots (all O–H1, all
    O–H2, all H–H); pairs of one slot share no atom, so updating a whole slot at once is
    exactly ASE's pair-by-pair sweep in this order.
    """

    def __init__(
        self, atoms, *, waters: np.ndarray | None = None, bond_cutoff: float = BOND_CUTOFF, tolerance: float = 1e-13
    ) -> None:
        waters = find_waters(atoms, bond_cutoff) if waters is None else np.asarray(waters, dtype=int).reshape(-1, 3)
        self.waters = waters
        pairs = _water_pairs(waters)
        vectors = find_mic(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], atoms.cell, atoms.pbc)[0]
        super().__init__(pairs, tolerance=tolerance, bondlengths=np.linalg.norm(vectors, axis=1))
        self.slots = _slots(len(waters))

    def _sweeps(self, atoms, update) -> None:
        """Repeat ``update(slot, d, m)`` over the slots until no pair needs a correction."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        d = find_mic(atoms.positions[a] - atoms.positions[b], atoms.cell, atoms.pbc)[0]  # (P, 3) old bond vectors
        masses = atoms.get_masses()
        reduced = 1.0 / (1.0 / masses[a] + 1.0 / masses[b])
        for _ in range(self.maxiter):
            if not any([update(slot, d[slot], reduced[slot]) for slot in self.slots]):
                return
        raise RuntimeError("Did not converge")

    def adjust_positions(self, atoms, new) -> None:
        old, masses = atoms.positions, atoms.get_masses()

        def update(slot, d0, m) -> bool:
            a, b = self.pairs[slot, 0], self.pairs[slot, 1]
            d1 = new[a] - new[b] - (old[a] - old[b]) + d0
            x = 0.5 * (self.bondlengths[slot] ** 2 - (d1 * d1).sum(1)) / (d0 * d1).sum(1)
            return self._apply(new, a, b, x, m, masses, d0, positions=True)

        self._sweeps(atoms, update)

    def adjust_momenta(self, atoms, p) -> None:
        masses = atoms.get_masses()

        def update(slot, d, m) -> bool:
            a, b = self.pairs[slot, 0], self.pairs[slot, 1]
            x = -((p[a] / masses[a, None] - p[b] / masses[b, None]) * d).sum(1) / self.bondlengths[slot] ** 2
            return self._apply(p, a, b, x, m, masses, d, positions=False)

        self._sweeps(atoms, update)

    def _apply(self, array, a, b, x, m, masses, d, *, positions: bool) -> bool:
        """ASE's correction of the pairs with |x| > tolerance; True if any was corrected."""
        x = np.where(np.abs(x) > self.tolerance, x, 0.0)
        step = (x * m)[:, None] * d
        array[a] += step / masses[a, None] if positions else step
        array[b] -= step / masses[b, None] if positions else step
        return bool(x.any())

    def index_shuffle(self, atoms, ind) -> None:
        """Keep the waters wholly inside the selection ``ind`` (ASE calls this when atoms are sliced)."""
        mapping = np.full(len(atoms), -1)
        mapping[ind] = np.arange(len(mapping[ind]))
        waters = mapping[self.waters]
        keep = (waters >= 0).all(axis=1)
        if not keep.any():
            raise IndexError("Constraint not part of slice")
        lengths = self.bondlengths.reshape(3, -1)[:, keep].ravel()
        self.waters = waters[keep]
        self.pairs = _water_pairs(self.waters)
        self.bondlengths = lengths
        self.slots = _slots(len(self.waters))


def _water_pairs(waters: np.ndarray) -> np.ndarray:
    """(3W, 2) constrained pairs in three slots: all O–H1, all O–H2, all H–H."""
    return np.concatenate([waters[:, [0, 1]], waters[:, [0, 2]], waters[:, [1, 2]]])


def _slots(n_waters: int) -> list[slice]:
    return [slice(k * n_waters, (k + 1) * n_waters) for k in range(3)]


def rigid_water_constraint(atoms, bond_cutoff: float = BOND_CUTOFF) -> RigidWater | None:
    """The rigid-water constraint of ``atoms`` (see :func:`find_waters`), or None without water."""
    waters = find_waters(atoms, bond_cutoff)
    return RigidWater(atoms, waters=waters) if len(waters) else None
