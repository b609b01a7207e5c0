"""An independent textbook Ewald sum in numpy (point charges, cubic or triclinic cell), for tests."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import erfc

COULOMB_EV_A = 14.399645478425667  # e^2 / (4 pi eps0) in eV Å


def ewald_energy(
    charges: np.ndarray, positions: np.ndarray, cell: np.ndarray, alpha: float = 0.4, n_real: int = 3, n_recip: int = 12
) -> float:
    """Electrostatic energy (eV) of point charges (e) at positions (Å) in a periodic cell (rows, Å).

    Real space: all images within ``n_real`` cells; reciprocal space: all k = 2 pi m B with |m_i| <= n_recip.
    Standard splitting with Gaussian width 1/(sqrt(2) alpha); converged to ~1e-10 eV for ~10 Å cells.
    """
    q = np.asarray(charges, float)
    x = np.asarray(positions, float)
    cell = np.asarray(cell, float)
    real = 0.0
    for m in itertools.product(range(-n_real, n_real + 1), repeat=3):
        d = x[None, :, :] - x[:, None, :] + np.asarray(m) @ cell
        r = np.linalg.norm(d, axis=-1)
        if m == (0, 0, 0):
            np.fill_diagonal(r, np.inf)
        real += 0.5 * np.sum(q[:, None] * q[None, :] * erfc(alpha * r) / r)
    volume = abs(np.linalg.det(cell))
    reciprocal_basis = 2 * np.pi * np.linalg.inv(cell).T
    recip = 0.0
    for m in itertools.product(range(-n_recip, n_recip + 1), repeat=3):
        if m == (0, 0, 0):
            continue
        k = np.asarray(m) @ reciprocal_basis
        k2 = k @ k
        structure = np.sum(q * np.exp(1j * (x @ k)))
        recip += 2 * np.pi / volume * np.exp(-k2 / (4 * alpha**2)) / k2 * abs(structure) ** 2
    self_energy = -alpha / np.sqrt(np.pi) * np.sum(q**2)
    return COULOMB_EV_A * (real + recip + self_energy)


def excluded_pair_energy(charges, positions, cell, switch, outer: float, n_images: int = 1) -> float:
    """sum over pairs (and images) closer than ``outer`` of q_i q_j switch(r)/r, in eV (brute force)."""
    q = np.asarray(charges, float)
    x = np.asarray(positions, float)
    total = 0.0
    for m in itertools.product(range(-n_images, n_images + 1), repeat=3):
        d = x[None, :, :] - x[:, None, :] + np.asarray(m) @ np.asarray(cell, float)
        r = np.linalg.norm(d, axis=-1)
        if m == (0, 0, 0):
            np.fill_diagonal(r, np.inf)
        close = r < outer
        total += 0.5 * np.sum((q[:, None] * q[None, :])[close] * switch(r[close]) / r[close])
    return COULOMB_EV_A * total
