"""The long-range branch: the local PaiNN plus learned charges and their electrostatics.

e_i = e_i(local) + q_i phi_i, where the charges q (e) are a learned per-species baseline plus
a linear read-out of the local invariant features, shifted per frame so that each frame's total charge equals
``total_charge`` exactly, and phi are the electrostatic potentials of those charges
(:mod:`adascale.models.electrostatics`: torch-pme Ewald/PME for periodic cells, direct
Coulomb for molecules). The electrostatic forces come with the rest through autograd,
including the dependence of the charges on the positions.

Why this is the right physics for the testbed: its labels are SPC/E water with
Joung-Cheatham ions, i.e. fixed point charges plus Lennard-Jones. Learned charges with an
Ewald sum represent the 1/r tails exactly; the local model only has to learn what lies
inside its cutoff.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adascale.models.batch import AtomsBatch
from adascale.models.electrostatics import Electrostatics
from adascale.models.painn import PaiNN


class LongRangePaiNN(PaiNN):
    """PaiNN plus charge-constrained electrostatics; see :class:`PaiNN` for the shared arguments."""

    kind = "painn_long_range"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 6.0,
        *,
        total_charge: float = 0.0,
        electrostatics: str = "ewald",
        exclusion_inner: float = 2.0,
        exclusion_outer: float = 3.0,
        **painn_settings,
    ) -> None:
        super().__init__(species, cutoff, **painn_settings)
        self.total_charge = float(total_charge)
        self.species_charge = nn.Parameter(torch.zeros(len(self.species)))  # e, the baseline of each species
        self.charge_readout = nn.Linear(self.features, 1)  # environment-dependent correction
        self.electrostatics = Electrostatics(cutoff, electrostatics, exclusion_inner, exclusion_outer)

    def config(self) -> dict:
        return super().config() | {
            "total_charge": self.total_charge,
            "electrostatics": self.electrostatics.method,
            "exclusion_inner": self.electrostatics.exclusion_inner,
            "exclusion_outer": self.electrostatics.exclusion_outer,
        }

    def interaction_range(self) -> float:
        """Infinite: Ewald/PME sums over every periodic image."""
        return math.inf

    def charges(self, features: Tensor, batch: AtomsBatch) -> Tensor:
        """(n,) charges in e, summing to ``total_charge`` in every frame (the excess spread evenly)."""
        raw = self.species_charge[self.species_index(batch.numbers)] + self.charge_readout(features).squeeze(1)
        counts = batch.atoms_per_frame().to(raw.dtype)
        excess = torch.zeros(batch.n_frames, dtype=raw.dtype, device=raw.device).index_add(0, batch.frame_index, raw)
        excess = (excess - self.total_charge) / counts
        return raw - excess[batch.frame_index]

    def atom_energies(self, batch: AtomsBatch) -> tuple[Tensor, Tensor]:
        local, features = self.local_energies(batch)
        q = self.charges(features, batch)
        phi = self.electrostatics(q, batch, batch.edge_vectors())
        return local + q * phi, features
