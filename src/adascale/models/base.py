"""The shared branch base: species bookkeeping, energy statistics, and conservative forces.

A branch is a force model of one spatial scale. Subclasses implement one method,
:meth:`Branch.atom_energies`, returning per-atom energies (eV) and invariant per-atom
latent features; the base sums energies per frame and takes forces as -dE/dR by
autograd, so every branch is conservative by construction.

Energy statistics are fitted from the training data, not learned: per-species shifts
(eV per atom, least squares on the training energies) and one energy scale (eV, the
RMS of the reference force components times 1 Å), so the network only has to learn an
O(1) correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.repulsion import PairRepulsion

N_ELEMENTS = 119


class Branch(nn.Module):
    """Base of all branches; ``cutoff`` in Å, ``species`` the atomic numbers it knows, ``repulsion`` the
    settings of a :class:`~adascale.models.repulsion.PairRepulsion` (pairs, energy, width) or None."""

    kind: str = "branch"

    def __init__(self, species: Sequence[int], cutoff: float, repulsion: dict | None = None) -> None:
        super().__init__()
        species = sorted({int(z) for z in species})
        if not species or min(species) < 1 or max(species) >= N_ELEMENTS:
            raise AdaScaleError(f"species must be atomic numbers in 1..{N_ELEMENTS - 1}, got {species}")
        if cutoff <= 0:
            raise AdaScaleError(f"cutoff must be positive (Å), got {cutoff}")
        self.species: list[int] = species
        self.cutoff = float(cutoff)
        table = torch.full((N_ELEMENTS,), -1, dtype=torch.long)
        table[species] = torch.arange(len(species))
        self.register_buffer("species_table", table, persistent=False)
        self.register_buffer("energy_shift", torch.zeros(len(species)))  # (S,) eV per atom
        self.register_buffer("energy_scale", torch.ones(()))  # eV
        self.repulsion = None if repulsion is None else PairRepulsion(species, **repulsion)

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this branch; subclasses extend it."""
        config = {"kind": self.kind, "species": self.species, "cutoff": self.cutoff}
        return config if self.repulsion is None else config | {"repulsion": self.repulsion.config()}

    def interaction_range(self) -> float:
        """Å: how far an atom's energy reaches (its receptive field); what MD engines decomposing space need."""
        return self.cutoff

    @classmethod
    def from_config(cls, settings: dict, build) -> Branch:
        """Rebuild from :meth:`config` without its kind; ``build`` builds nested configs (mixtures use it)."""
        return cls(**settings)

    def species_index(self, numbers: Tensor) -> Tensor:
        """(n,) atomic numbers -> (n,) indices into ``species``; unknown species raise AdaScaleError."""
        n_elements = self.species_table.shape[0]  # N_ELEMENTS (TorchScript reads no module-level ints)
        index = self.species_table[numbers.clamp(0, n_elements - 1)]
        unknown = (index < 0) | (numbers < 0) | (numbers >= n_elements)
        if bool(unknown.any()):
            bad: list[int] = torch.unique(numbers[unknown]).tolist()
            raise AdaScaleError(f"atomic number(s) {bad} unknown to this model (trained on species {self.species})")
        return index

    def set_energy_statistics(self, shift: Sequence[float] | np.ndarray, scale: float) -> None:
        """Set the per-species shifts (S,) eV and the energy scale (eV) fitted on training data."""
        shift = torch.as_tensor(np.asarray(shift, dtype=np.float64), dtype=self.energy_shift.dtype)
        if shift.shape != self.energy_shift.shape:
            raise ValueError(f"expected {tuple(self.energy_shift.shape)} shifts, got {tuple(shift.shape)}")
        if not scale > 0:
            raise ValueError(f"energy scale must be positive, got {scale}")
        self.energy_shift.copy_(shift)
        self.energy_scale.fill_(float(scale))

    def scaled_energies(self, raw: Tensor, species_index: Tensor, batch: AtomsBatch) -> Tensor:
        """(n,) network outputs -> (n,) eV: shift[species] + scale * raw, plus the pair repulsion if any."""
        energy = self.energy_shift[species_index] + self.energy_scale * raw
        if self.repulsion is None:
            return energy
        near = batch.within(self.repulsion.reach)  # the walls' few short edges, not the whole (6 Å) list
        r = torch.linalg.vector_norm(near.edge_vectors(), dim=1)
        return energy + self.repulsion(r, near.edge_index, species_index)

    def atom_energies(self, batch: AtomsBatch) -> tuple[Tensor, Tensor]:
        """((n,) eV per atom including species shifts, (n, F) invariant latent features)."""
        raise NotImplementedError

    @torch.jit.unused  # Python only; exported models call atom_energies (the engine takes the gradient)
    def forward(self, batch: AtomsBatch) -> dict[str, Tensor]:
        """Energies (B,) eV, forces (n, 3) eV/Å = -dE/dR, atom energies (n,) eV, features (n, F);
        and, when the batch's cell requires grad, the virial (B, 3, 3) eV = dE/dε, the derivative
        with respect to a symmetric homogeneous strain of cell and atoms (stress = virial / V).

        The virial comes from the same backward pass as the forces: for positions r (rows) and
        cell rows h, dE/dε = sym(Σ_i r_i ⊗ ∂E/∂r_i + Σ_k h_k ⊗ ∂E/∂h_k), exact because every
        periodic image enters through integer shifts times the cell. In training mode the graph is
        kept (create_graph) so force and stress losses can be back-propagated; in eval mode the
        outputs are detached.
        """
        batch = batch.within(self.cutoff)
        with_virial = batch.cell.requires_grad
        with torch.enable_grad():
            positions = batch.positions
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
                batch = batch.with_positions(positions)
            atom_energy, features = self.atom_energies(batch)
            energy = torch.zeros(batch.n_frames, dtype=atom_energy.dtype, device=atom_energy.device)
            energy = energy.index_add(0, batch.frame_index, atom_energy)
            inputs = [positions, batch.cell] if with_virial else [positions]
            gradients = torch.autograd.grad([energy.sum()], inputs, create_graph=self.training)
        gradient = gradients[0]
        assert gradient is not None
        out = {"energy": energy, "forces": -gradient, "atom_energy": atom_energy, "features": features}
        if with_virial:
            cell_gradient = gradients[1]
            assert cell_gradient is not None
            atomic = positions.unsqueeze(2) * gradient.unsqueeze(1)  # (n, 3, 3): r_i ⊗ ∂E/∂r_i
            virial = torch.zeros(batch.n_frames, 3, 3, dtype=energy.dtype, device=energy.device)
            virial = virial.index_add(0, batch.frame_index, atomic) + torch.bmm(batch.cell.transpose(1, 2), cell_gradient)
            out["virial"] = 0.5 * (virial + virial.transpose(1, 2))
        if not self.training:
            out = {key: value.detach() for key, value in out.items()}
        return out
