"""Starting charges for the long-range branch, fitted to the training forces.

Coulomb forces are quadratic in the charges, so a model that starts at q = 0 sits on a
saddle: the force loss has no gradient with respect to the charges there, and the local
part of the branch absorbs what it can before the charges ever grow. Per-species point
charges q_a are fitted instead, in closed form: the forces of charges q are linear in the
products P_ab = q_a q_b,

    F = sum_a P_aa F[1_a] + sum_{a<b} P_ab (F[1_a + 1_b] - F[1_a] - F[1_b]),

where F[c] are the Coulomb forces of the charge vector c (1_a: one unit charge on every atom
of species a; torch-pme, pairs closer than ``bonded_below`` removed as bonded). Linear least
squares on the reference forces gives P; its leading eigenvector gives q up to a global sign
(which no force or energy can see).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torchpme

from adascale.data.frames import Frame
from adascale.models.batch import AtomsBatch
from adascale.models.electrostatics import Electrostatics


def coulomb_forces(electrostatics: Electrostatics, batch: AtomsBatch, charges: torch.Tensor, bonded_below: float) -> np.ndarray:
    """(n, 3) eV/Å forces of point ``charges`` (n,) e with pairs closer than ``bonded_below`` Å left out."""
    positions = batch.positions.detach().clone().requires_grad_(True)
    batch = batch.with_positions(positions)
    vectors = batch.edge_vectors()
    energy = (charges * electrostatics(charges, batch, vectors, exclude=False)).sum()
    r = torch.linalg.vector_norm(vectors, dim=1)
    bonded = r < bonded_below
    i, j = batch.edge_index[:, bonded]
    energy = energy - 0.5 * torchpme.prefactors.eV_A * (charges[i] * charges[j] / r[bonded]).sum()
    (gradient,) = torch.autograd.grad(energy, positions)
    return -gradient.numpy()


def fit_species_charges(
    frames: Sequence[Frame],
    species: Sequence[int],
    electrostatics: Electrostatics,
    *,
    bonded_below: float = 1.7,
    max_frames: int = 4,
) -> np.ndarray:
    """(S,) per-species charges (e) whose Coulomb forces best fit the frames' reference forces.

    ``electrostatics`` supplies the Ewald/PME settings (a float64 copy on the CPU is used, wherever
    the model itself sits: a least-squares fit on a few frames).
    """
    electrostatics = copy.deepcopy(electrostatics).to(device="cpu", dtype=torch.float64)
    pairs = [(a, b) for a in range(len(species)) for b in range(a, len(species))]
    columns, targets = [], []
    for frame in frames[:max_frames]:
        batch = AtomsBatch.from_frames([frame], electrostatics.cutoff, dtype=torch.float64)
        indicator = [torch.as_tensor(frame.numbers == z, dtype=torch.float64) for z in species]
        single = [coulomb_forces(electrostatics, batch, c, bonded_below).ravel() for c in indicator]
        columns.append(
            np.stack(
                [
                    single[a]
                    if a == b
                    else coulomb_forces(electrostatics, batch, indicator[a] + indicator[b], bonded_below).ravel()
                    - single[a]
                    - single[b]
                    for a, b in pairs
                ],
                axis=1,
            )
        )
        targets.append(np.ravel(frame.forces))
    coefficients, *_ = np.linalg.lstsq(np.concatenate(columns), np.concatenate(targets), rcond=None)
    products = np.zeros((len(species), len(species)))
    for (a, b), value in zip(pairs, coefficients):
        products[a, b] = products[b, a] = value
    eigenvalues, eigenvectors = np.linalg.eigh(products)
    return np.sqrt(max(eigenvalues[-1], 0.0)) * eigenvectors[:, -1]
