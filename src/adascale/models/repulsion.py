"""A pair repulsion below the closest distances seen in training: the prior that keeps MD physical.

Why. A model learns forces where its training frames go and nothing beyond. Thermal MD of the
liquid soon visits pairs a little closer than any training frame, where an unconstrained
network can be attractive: molecules then interpenetrate (measured on the default run's
long-range branch in `adascale validate`: intermolecular H-H at 0.1 Å within 0.1 ps). The wall
E_ij = energy * ((onset_ij - r_ij) / width)³ for r_ij < onset_ij, with the onset of each species
pair at the closest distance of that pair in the training frames (minus an optional margin),
is exactly zero on every training configuration, so it changes no label fit; it only decides
what happens outside the data, as ZBL-type priors do in NequIP and MACE. Species pairs that
never met in training get no wall.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adascale.nn.smooth import cubic_wall


class PairRepulsion(nn.Module):
    """Per-atom wall energies (eV): half of each pair's wall to each of its two atoms."""

    def __init__(self, species: Sequence[int], pairs: Sequence[Sequence[float]], energy: float, width: float) -> None:
        """``pairs``: [[Z_a, Z_b, onset Å], ...] over ``species``; ``energy`` eV at ``width`` Å inside the onset."""
        super().__init__()
        if energy < 0 or width <= 0:
            raise ValueError(f"repulsion needs energy >= 0 and width > 0, got energy={energy}, width={width}")
        self.pairs = [[int(a), int(b), float(onset)] for a, b, onset in pairs]
        self.energy, self.width = float(energy), float(width)
        index = {int(z): k for k, z in enumerate(species)}
        onsets = torch.zeros(len(index), len(index), dtype=torch.float64)  # the model's dtype follows (.to)
        for a, b, onset in self.pairs:
            if a not in index or b not in index:
                raise ValueError(f"repulsion pair ({a}, {b}) names a species outside {list(index)}")
            onsets[index[a], index[b]] = onsets[index[b], index[a]] = onset
        self.register_buffer("onsets", onsets, persistent=False)  # (S, S) Å, rebuilt from the config
        self.reach = max((onset for _, _, onset in self.pairs), default=0.0)  # Å: no wall acts beyond

    def config(self) -> dict:
        return {"pairs": self.pairs, "energy": self.energy, "width": self.width}

    def forward(self, r: Tensor, edge_index: Tensor, species_index: Tensor) -> Tensor:
        """r (E,) Å of a full neighbour list (both directions), species_index (n,) -> (n,) eV."""
        onset = self.onsets.to(r.dtype)[species_index[edge_index[0]], species_index[edge_index[1]]]
        per_edge = 0.5 * self.energy * cubic_wall(r, onset, self.width)
        return r.new_zeros(species_index.shape[0]).index_add(0, edge_index[0], per_edge)
