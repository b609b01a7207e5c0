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
from torch import Tensor, nn

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.models.batch import AtomsBatch
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


class GeometricFeatures(nn.Module):
    """The features of a :class:`FeatureSpec` as a module: (n, F) per-atom features of a batch, F = len(spec.names).

    A module (no parameters or buffers, so saved weights are unchanged) with the spec's numbers as
    plain attributes, so that models built on it compile with TorchScript.

    The batch's neighbour list must reach at least ``spec.cutoff`` (pairs beyond it contribute
    exactly 0, so a longer list gives the same features). Gradients flow to ``batch.positions``
    (and ``batch.cell``).

    The nearest-ion distance is the smooth minimum
    d_i = c − τ log(1 + Σ_j s(r_ij) exp((c − r_ij)/τ)) over other ions j (not i's own images),
    with c = ``spec.nearest_ion_cap``, τ = ``spec.softmin_width`` and s the switch ending at
    the cutoff: ≈ the nearest ion's distance when one is near, c when none is.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec  # the description (Python only)
        self.species: list[int] = list(spec.species)
        self.ion_species: list[int] = list(spec.ion_species)
        self.radii: list[float] = list(spec.radii)
        self.cutoff = spec.cutoff
        self.switch_width = spec.switch_width
        self.softmin_width = spec.softmin_width
        self.nearest_ion_cap = spec.nearest_ion_cap

    def forward(self, batch: AtomsBatch) -> Tensor:
        if batch.cutoff < self.cutoff:
            raise ValueError(f"router features need a neighbour list of at least {self.cutoff} Å, got {batch.cutoff} Å")
        batch = batch.within(self.cutoff)
        numbers = batch.numbers
        centre, neighbour = batch.edge_index[0], batch.edge_index[1]
        r = torch.linalg.vector_norm(batch.edge_vectors(), dim=-1)  # (E,) Å
        n, dtype, device = numbers.shape[0], r.dtype, r.device
        onehot = (numbers[:, None] == torch.tensor(self.species, device=device)).to(dtype)  # (n, S)

        neighbour_onehot = onehot[neighbour]  # (E, S)
        columns = [onehot]
        cap, tau = self.nearest_ion_cap, self.softmin_width
        is_ion = torch.isin(numbers, torch.tensor(self.ion_species, device=device))
        ion_pair = is_ion[neighbour] & (centre != neighbour)
        weight = torch.where(ion_pair, switch(r, self.cutoff, self.switch_width) * torch.exp((cap - r) / tau), 0.0)
        total = torch.ones(n, dtype=dtype, device=device).index_add(0, centre, weight)
        columns.append((cap - tau * torch.log(total))[:, None])  # the smooth nearest-ion distance
        for radius in self.radii:
            within = neighbour_onehot * switch(r, radius, self.switch_width)[:, None]
            columns.append(torch.zeros(n, len(self.species), dtype=dtype, device=device).index_add(0, centre, within))
        return torch.cat(columns, dim=1)


def geometric_features(batch: AtomsBatch, spec: FeatureSpec) -> Tensor:
    """Per-atom geometric features (n, F) of ``spec`` (see :class:`GeometricFeatures`)."""
    return GeometricFeatures(spec)(batch)
