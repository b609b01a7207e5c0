"""Geometric per-atom features of an atom's environment: what a router reads inside a model.

Written once in torch so that models built on them (the conservative mixture, the
scale-conditioned branch's router) can differentiate them: forces include the router's own
gradient. Species one-hot, a smooth nearest-ion distance, and smooth coordination counts of
each species at a few radii. Every term is C2 in the positions (the quintic smootherstep
:func:`adascale.nn.smooth.switch`), so MD through a router built on them sees continuous
forces. They read positions only, never labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.nn.smooth import switch


@dataclass(frozen=True)
class FeatureSpec:
    """What the geometric features are; stored with every router and prediction set that uses them.

    species: atomic numbers, in one-hot and coordination order.
    ion_species: species whose nearest member gives the nearest-ion distance.
    radii: coordination radii, Å; a neighbour counts 1 inside ``r - switch_width`` and 0 beyond ``r``.
    switch_width: Å, width of the smooth switch of every count and of the nearest-ion cap.
    softmin_width: Å, temperature τ of the smooth minimum over ion distances.
    """

    species: tuple[int, ...]
    ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES
    radii: tuple[float, ...] = (3.5, 5.0, 6.5, 8.0)
    switch_width: float = 1.0
    softmin_width: float = 0.2
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        object.__setattr__(self, "ion_species", tuple(int(z) for z in self.ion_species))
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))
        if not self.species or not self.radii or min(self.radii) <= self.switch_width or self.softmin_width <= 0:
            raise ValueError(f"invalid feature spec {self}")
        names = [f"is_Z{z}" for z in self.species] + ["nearest_ion_A"]
        names += [f"count_Z{z}_r{r:g}" for r in self.radii for z in self.species]
        object.__setattr__(self, "names", tuple(names))

    @property
    def cutoff(self) -> float:
        """Å: the largest neighbour distance the features read."""
        return max(self.radii)

    @property
    def nearest_ion_cap(self) -> float:
        """Å: the smooth nearest-ion distance saturates here (no ion within the cutoff)."""
        return self.cutoff - self.switch_width

    def to_dict(self) -> dict:
        """JSON-ready dict (``FeatureSpec(**d)`` rebuilds it)."""
        d = asdict(self)
        d.pop("names")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in d.items()}


def geometric_features(batch, spec: FeatureSpec) -> torch.Tensor:
    """Per-atom geometric features (n, F), F = len(spec.names), differentiable in the positions.

    batch: an :class:`adascale.models.batch.AtomsBatch` whose neighbour list reaches at
    least ``spec.cutoff`` (pairs beyond it contribute exactly 0, so a longer list gives the
    same features). Gradients flow to ``batch.positions`` (and ``batch.cell``).

    The nearest-ion distance is the smooth minimum
    d_i = c − τ log(1 + Σ_j s(r_ij) exp((c − r_ij)/τ)) over other ions j (not i's own images),
    with c = ``spec.nearest_ion_cap``, τ = ``spec.softmin_width`` and s the switch ending at
    the cutoff: ≈ the nearest ion's distance when one is near, c when none is.
    """
    if batch.cutoff < spec.cutoff:
        raise ValueError(f"router features need a neighbour list of at least {spec.cutoff:g} Å, got {batch.cutoff:g} Å")
    batch = batch.within(spec.cutoff)
    numbers = batch.numbers
    centre, neighbour = batch.edge_index
    r = torch.linalg.vector_norm(batch.edge_vectors(), dim=-1)  # (E,) Å
    n, dtype, device = len(numbers), r.dtype, r.device
    onehot = (numbers[:, None] == torch.tensor(spec.species, device=device)).to(dtype)  # (n, S)

    neighbour_onehot = onehot[neighbour]  # (E, S)
    counts = [
        torch.zeros(n, len(spec.species), dtype=dtype, device=device).index_add(
            0, centre, neighbour_onehot * switch(r, radius, spec.switch_width)[:, None]
        )
        for radius in spec.radii
    ]

    cap, tau = spec.nearest_ion_cap, spec.softmin_width
    is_ion = torch.isin(numbers, torch.tensor(spec.ion_species, device=device))
    ion_pair = is_ion[neighbour] & (centre != neighbour)
    weight = torch.where(ion_pair, switch(r, spec.cutoff, spec.switch_width) * torch.exp((cap - r) / tau), 0.0)
    total = torch.ones(n, dtype=dtype, device=device).index_add(0, centre, weight)
    nearest_ion = cap - tau * torch.log(total)

    return torch.cat([onehot, nearest_ion[:, None], *counts], dim=1)
