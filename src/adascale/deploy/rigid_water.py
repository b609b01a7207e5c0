"""Rigid water for ASE: ``adascale.RigidWater(atoms)``, ASE's FixBondLengths made vectorised.

Why: the NaCl(aq) testbed's labels come from rigid SPC/E water, so its frames never show a
stretched or bent water and a model trained on them knows nothing about those motions. MD
must keep water rigid too. Each water is found by connectivity (an O with exactly two H
within ``bond_cutoff``) and its O–H, O–H and H–H distances are held fixed by RATTLE, which
removes 3 degrees of freedom per water.

ASE's own ``FixBondLengths`` does the same with a Python loop over pairs (about 90 % of an MD
step at 748 atoms), sweeping pair by pair until every correction is below its tolerance: a
Gauss-Seidel iteration that converges linearly (~60 sweeps per call at 1e-13).
:class:`RigidWater` is a ``FixBondLengths`` that solves the same constraint equations per water,
as arrays over all waters at once: the velocity (momentum and force) constraints are linear, so
one 3x3 solve per water gives their exact solution; the position constraints are quadratic in
the three multipliers and Newton's method reaches them in ~3 iterations. Both stop on ASE's own
test (every pair's correction factor ``x`` at most ``tolerance``), so the results agree with
FixBondLengths' to that tolerance (``tests/deploy`` checks it), at ~0.5 ms per call instead of ~10.
Its ``todict`` is FixBondLengths', so trajectories written with it read back anywhere.
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
    Bond lengths are those of ``atoms`` now. ``pairs`` (3W, 2) and ``bondlengths`` (3W,) are
    FixBondLengths' attributes, ordered all O–H1, all O–H2, all H–H (so ``reshape(3, W)`` gives
    each water's three).
    """

    def __init__(
        self, atoms, *, waters: np.ndarray | None = None, bond_cutoff: float = BOND_CUTOFF, tolerance: float = 1e-13
    ) -> None:
        waters = find_waters(atoms, bond_cutoff) if waters is None else np.asarray(waters, dtype=int).reshape(-1, 3)
        self.waters = waters
        pairs = _water_pairs(waters)
        vectors = find_mic(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], atoms.cell, atoms.pbc)[0]
        super().__init__(pairs, tolerance=tolerance, bondlengths=np.linalg.norm(vectors, axis=1))

    def _per_water(self, atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W, 3, 3) old bond vectors d0 [water, pair, xyz] (minimum image), (W, 3, 3) coupling
        c_kl = (B M^-1 B^T)_kl of pairs k, l through their shared atoms, (W, 3, 3) atom-pair incidence / mass."""
        d0 = find_mic(atoms.positions[self.pairs[:, 0]] - atoms.positions[self.pairs[:, 1]], atoms.cell, atoms.pbc)[0]
        d0 = d0.reshape(3, -1, 3).transpose(1, 0, 2)
        inverse_mass = 1.0 / atoms.get_masses()[self.waters]  # (W, 3): O, H1, H2
        coupling = np.einsum("ki,wi,li->wkl", _INCIDENCE, inverse_mass, _INCIDENCE)
        return d0, coupling, _INCIDENCE.T[None] * inverse_mass[:, :, None]  # move[w, atom, pair]

    def adjust_positions(self, atoms, new) -> None:
        """Newton on the three multipliers mu of each water: |d1_k + sum_l c_kl mu_l d0_l|^2 = L_k^2."""
        old = atoms.positions
        d0, coupling, move = self._per_water(atoms)
        lengths = self.bondlengths.reshape(3, -1).T  # (W, 3)
        a, b = self._ends()
        d1 = new[a] - new[b] - (old[a] - old[b]) + d0  # (W, 3, 3) new bond vectors, continued from d0
        mu = np.zeros(lengths.shape)
        for _ in range(self.maxiter):
            d = d1 + np.einsum("wkl,wl,wlc->wkc", coupling, mu, d0)
            residual = lengths**2 - np.einsum("wkc,wkc->wk", d, d)
            if not (np.abs(0.5 * residual / np.einsum("wkc,wkc->wk", d0, d)) > self.tolerance).any():  # ASE's test
                break
            jacobian = 2.0 * coupling * np.einsum("wkc,wlc->wkl", d, d0)
            mu += np.linalg.solve(jacobian, residual[:, :, None])[:, :, 0]
        else:
            raise RuntimeError("Did not converge")
        new[self.waters] += np.einsum("wil,wl,wlc->wic", move, mu, d0)

    def adjust_momenta(self, atoms, p) -> None:
        """The linear velocity constraints (v_a - v_b) . d_k = 0, solved per water (3x3).

        Solved in float64 whatever the dtype of ``p``: a float32 calculator's forces (ASE's
        ``adjust_forces`` passes them here) never meet the 1e-13 tolerance in float32, where
        FixBondLengths raises "Did not converge" (MACE's calculator returns float32 forces).
        """
        work = np.asarray(p, dtype=np.float64)  # p itself when it is float64 already
        d, coupling, _ = self._per_water(atoms)
        lengths = self.bondlengths.reshape(3, -1).T
        matrix = coupling * np.einsum("wkc,wlc->wkl", d, d)
        masses = atoms.get_masses()
        a, b = self._ends()
        for _ in range(self.maxiter):
            rate = np.einsum("wkc,wkc->wk", work[a] / masses[a, None] - work[b] / masses[b, None], d)  # (W, 3)
            if not (np.abs(rate / lengths**2) > self.tolerance).any():  # ASE's test on its correction factor
                if work is not p:
                    p[:] = work
                return
            lam = np.linalg.solve(matrix, -rate[:, :, None])[:, :, 0]
            work[self.waters] += np.einsum("li,wl,wlc->wic", _INCIDENCE, lam, d)  # p_i += sum_l B_li lambda_l d_l
        raise RuntimeError("Did not converge")

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, 3) atom indices of the first and second end of each water's three pairs."""
        return self.pairs[:, 0].reshape(3, -1).T, self.pairs[:, 1].reshape(3, -1).T

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


def _water_pairs(waters: np.ndarray) -> np.ndarray:
    """(3W, 2) constrained pairs in three slots: all O–H1, all O–H2, all H–H."""
    return np.concatenate([waters[:, [0, 1]], waters[:, [0, 2]], waters[:, [1, 2]]])


#: pair k of a water (rows: O-H1, O-H2, H1-H2) against its atoms (columns: O, H1, H2): +1 first end, -1 second.
_INCIDENCE = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])


def rigid_water_constraint(atoms, bond_cutoff: float = BOND_CUTOFF) -> RigidWater | None:
    """The rigid-water constraint of ``atoms`` (see :func:`find_waters`), or None without water."""
    waters = find_waters(atoms, bond_cutoff)
    return RigidWater(atoms, waters=waters) if len(waters) else None
