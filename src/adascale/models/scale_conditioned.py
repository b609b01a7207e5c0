"""The scale-conditioned branch: one trunk whose per-atom receptive field is a differentiable scale.

Each atom i carries a scale s_i in [0, 1] and a radius r_i = r_min + s_i (r_max - r_min):

* its atomic-basis edges i -> j carry the envelope u(r_ij / r_i), C2 in r_ij and in r_i, and its
  densities are normalised by the neighbour count expected within r_i (:meth:`PaiNN.representation`);
* its scalar features start from its species embedding plus an embedding of s_i (cosines of
  k pi s_i, smooth), so the trunk knows the scale it is evaluated at;
* its electrostatic energy is gated by its scale, e_i = e_i(local) + s_i q_i phi_i.

So s = 0 everywhere is a purely local model (anchor 0: basis to r_min = 3.5 Å, no Coulomb) and
s = 1 everywhere is the long-range branch (anchor 1: basis to 6 Å plus learned-charge PME).
Message passing runs over ``interaction_cutoff`` <= r_min for every atom. Forces are -dE/dR
of the whole energy, including the scales' own dependence on the positions, so the model is
conservative whatever sets the scales; and since everything is C2 in s, forces move
continuously when a scale does.

Where the scales come from (``scale_mode``):

* ``"random"`` (training the trunk): each training frame draws one of: independent U(0, 1)
  per atom, one U(0, 1) for the whole frame, all 0, all 1 (probabilities ``RANDOM_MIX``), so
  the trunk is accurate at every scale and at mixtures of scales. In eval mode it evaluates
  at ``fixed_scale``;
* ``"router"``: s_i = sigmoid(logit(fixed_scale) + g(x_i)), g a small MLP of label-free geometric features x_i
  (:mod:`adascale.models.features`: species, smooth nearest-ion distance, coordination counts,
  all within r_max so one neighbour list serves everything), trained through the model on the
  conservative force loss: loss-guided, differentiable scale updates in representation space.
  g starts at zero, so the router starts at ``fixed_scale`` for every atom, i.e. at the control,
  whatever weights a warm start copied into g from a trunk trained in another mode;
* ``"fixed"``: every atom at ``fixed_scale`` (the fixed-scale analysis, and capacity without
  adaptivity). :meth:`at_scale` evaluates any mode at one fixed scale for a while.

Adaptive radii also save work: edges beyond their centre's radius are dropped before the
atomic basis, and frames whose atoms all sit at s = 0 skip the Coulomb sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec, GeometricFeatures
from adascale.models.long_range import LongRangePaiNN
from adascale.nn.mlp import RouterNet

SCALE_MODES = ("random", "router", "fixed")
#: Probabilities of the training frames' scale patterns: per atom U(0,1), per frame U(0,1), all 0, all 1.
RANDOM_MIX = (0.4, 0.3, 0.15, 0.15)


class ScaleConditionedPaiNN(LongRangePaiNN):
    """PaiNN + learned-charge electrostatics with a per-atom scale; see the module docstring.

    cutoff: r_max (Å); min_radius: r_min (Å, at least ``interaction_cutoff``); scale_embedding:
    number of cosine features of s; router_radii / router_hidden: the router's feature radii (Å,
    at most ``cutoff``) and MLP widths; ion_species: the ions of its nearest-ion feature.
    Other arguments as :class:`LongRangePaiNN`.
    """

    kind = "scale_conditioned"

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 6.0,
        *,
        min_radius: float = 3.5,
        scale_embedding: int = 8,
        scale_mode: str = "random",
        fixed_scale: float = 1.0,
        router_radii: Sequence[float] = (3.0, 4.5, 6.0),
        router_hidden: Sequence[int] = (32, 32),
        ion_species: Sequence[int] = (11, 17),
        **long_range_settings,
    ) -> None:
        interaction_cutoff = long_range_settings.setdefault("interaction_cutoff", min_radius)
        if not 0 < (interaction_cutoff or cutoff) <= min_radius <= cutoff:
            raise AdaScaleError(
                f"need 0 < interaction_cutoff ({interaction_cutoff}) <= min_radius ({min_radius}) <= cutoff ({cutoff}) Å"
            )
        super().__init__(species, cutoff, **long_range_settings)
        if scale_mode not in SCALE_MODES:
            raise AdaScaleError(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
        if not 0.0 <= fixed_scale <= 1.0:
            raise AdaScaleError(f"fixed_scale must lie in [0, 1], got {fixed_scale}")
        self.min_radius = float(min_radius)
        self.scale_mode = scale_mode
        self.random_mix: list[float] = list(RANDOM_MIX)
        self.fixed_scale = float(fixed_scale)
        self.scale_frequencies = int(scale_embedding)
        self.scale_embedding = nn.Linear(self.scale_frequencies, self.features, bias=False)
        self.router_spec = FeatureSpec(species=tuple(self.species), ion_species=tuple(ion_species), radii=tuple(router_radii))
        if self.router_spec.cutoff > cutoff:
            raise AdaScaleError(f"router_radii reach {self.router_spec.cutoff} Å, beyond the cutoff {cutoff} Å")
        self.router_geometry = GeometricFeatures(self.router_spec)
        self.router_hidden = [int(h) for h in router_hidden]
        self.router = RouterNet(len(self.router_spec.names), 1, self.router_hidden)
        with torch.no_grad():  # g starts at 0: every atom at fixed_scale, the router begins as the control
            self.router.mlp[-1].weight.zero_()
            self.router.mlp[-1].bias.zero_()

    def config(self) -> dict:
        return super().config() | {
            "min_radius": self.min_radius,
            "scale_embedding": self.scale_frequencies,
            "scale_mode": self.scale_mode,
            "fixed_scale": self.fixed_scale,
            "router_radii": list(self.router_spec.radii),
            "router_hidden": self.router_hidden,
            "ion_species": list(self.router_spec.ion_species),
        }

    # ------------------------------------------------------------------ scales
    def router_features(self, batch: AtomsBatch) -> Tensor:
        """(n, F) router inputs: one-hot, nearest-ion distance / cap, log(1 + counts); no labels."""
        x = self.router_geometry(batch)
        n_species = len(self.router_geometry.species)
        onehot, nearest, counts = x[:, :n_species], x[:, n_species : n_species + 1], x[:, n_species + 1 :]
        return torch.cat([onehot, nearest / self.router_geometry.nearest_ion_cap, torch.log1p(counts)], dim=1)

    def atom_scales(self, batch: AtomsBatch) -> Tensor:
        """(n,) scale of every atom in [0, 1], by ``scale_mode`` (see the module docstring)."""
        n, dtype, device = len(batch.numbers), batch.positions.dtype, batch.positions.device
        if self.scale_mode == "router":
            return torch.sigmoid(self.router(self.router_features(batch))[:, 0] + _logit(self.fixed_scale))
        if self.scale_mode == "random" and self.training:
            return self.random_scales(batch)
        return torch.full((n,), self.fixed_scale, dtype=dtype, device=device)

    def random_scales(self, batch: AtomsBatch) -> Tensor:
        """(n,) training scales: per frame a pattern drawn from RANDOM_MIX (torch's global generator)."""
        frame_index, n_frames = batch.frame_index, batch.n_frames
        dtype, device = batch.positions.dtype, batch.positions.device
        pattern = torch.multinomial(torch.tensor(self.random_mix), n_frames, replacement=True).to(device)[frame_index]
        per_atom = torch.rand(frame_index.shape[0], dtype=dtype, device=device)
        per_frame = torch.rand(n_frames, dtype=dtype, device=device)[frame_index]
        constant = torch.where(pattern == 2, torch.zeros_like(per_atom), torch.ones_like(per_atom))
        return torch.where(pattern == 0, per_atom, torch.where(pattern == 1, per_frame, constant))

    @contextmanager
    def at_scale(self, scale: float) -> Iterator[ScaleConditionedPaiNN]:
        """Evaluate every atom at one fixed ``scale`` inside the block, whatever the mode."""
        mode, fixed = self.scale_mode, self.fixed_scale
        self.scale_mode, self.fixed_scale = "fixed", float(scale)
        try:
            yield self
        finally:
            self.scale_mode, self.fixed_scale = mode, fixed

    # ------------------------------------------------------------------ energy
    def embed_scales(self, scales: Tensor) -> Tensor:
        """(n,) scales -> (n, F) embedding of cos(k pi s), k = 0 .. scale_embedding - 1."""
        k = torch.arange(self.scale_frequencies, dtype=scales.dtype, device=scales.device)
        return self.scale_embedding(torch.cos(math.pi * scales[:, None] * k))

    def energies_at(self, batch: AtomsBatch, scales: Tensor) -> tuple[Tensor, Tensor]:
        """Atom energies (n,) eV and features (n, F) with atom i at scale ``scales[i]``."""
        species_index = self.species_index(batch.numbers)
        radius = self.min_radius + scales * (self.cutoff - self.min_radius)
        features = self.representation(batch, species_index, radius, self.embed_scales(scales))
        energy = self.scaled_energies(self.readout(features).squeeze(1), species_index, batch)
        if bool((scales == 0).all()) and not scales.requires_grad:
            return energy, features  # every gate closed: no Coulomb sum needed
        q = self.charges(features, batch)
        phi = self.electrostatics(q, batch, batch.edge_vectors())
        return energy + scales * q * phi, features

    def atom_energies(self, batch: AtomsBatch) -> tuple[Tensor, Tensor]:
        """The branch interface: energies at :meth:`atom_scales`; the scales join the features (last column)."""
        scales = self.atom_scales(batch)
        energy, features = self.energies_at(batch, scales)
        return energy, torch.cat([features, scales[:, None]], dim=1)


def _logit(p: float, eps: float = 1e-3) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))
