"""The conservative adaptive mixture: K branches and a smooth router in one potential.

    E = Σ_i Σ_k w_ik (e_ik + c_k,Z_i),   w_i = W(router(x_i)),   F = −∂E/∂R (autograd)

e_ik is branch k's energy of atom i, x_i the atom's smooth geometric features
(:class:`adascale.models.features.GeometricFeatures`) and the branches' latent features,
c_k,Z per-branch, per-species energy offsets. Forces come from the whole energy, so they
include the router's own gradient Σ_i Σ_k (e_ik + c_k,Z_i) ∂w_ik/∂R: the mixture is a
potential and conserves energy in NVE molecular dynamics (unlike per-atom force mixing,
which is faster but not the gradient of anything). The router gives each atom a scale
u_i and W is the scale axis's interpolation with its corners rounded
(:func:`adascale.nn.smooth.anchor_weights` with ``smoothing`` > 0): the same map as the
soft router's, so the soft router trained on per-atom force mixing is an exact warm start.
Every ingredient is C2 (switches, rounded corners), so forces are continuous. The offsets
matter only through ∂w/∂R: they align the branches' per-atom energy gauges (a per-species
constant leaves a branch's forces unchanged but not the router term).

The router does not read branch forces (their disagreement is a per-atom-mixing feature):
a potential built on forces would need second derivatives of the branches.

Saved like every model (:func:`adascale.models.io.save_model`): ``model.json`` nests every
branch's config beside the feature spec and sizes, ``weights.pt`` holds the state_dict of everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from adascale.errors import AdaScaleError
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec, GeometricFeatures
from adascale.nn.mlp import RouterNet
from adascale.nn.smooth import anchor_weights


class AdaptiveMixture(Branch):
    """A :class:`Branch` whose per-atom energy is the router-weighted sum of K branches' energies.

    branches: the anchors, shortest range first; scales (K,) their positions on the scale
    axis; spec: the router's geometric features; latent_widths: each branch's latent width
    (0 to leave its latents out); hidden: the router MLP's widths; smoothing: corner rounding
    of the weight map (> 0 for continuous forces); global_weight: one learned scale for every
    atom instead of a router (the capacity-without-adaptivity control); gauge_penalty: weight of
    :meth:`auxiliary_loss`, which aligns the branches' per-atom energies where atoms mix them.
    """

    kind = "adaptive_mixture"

    def __init__(
        self,
        branches: Sequence[Branch],
        scales: Sequence[float],
        spec: FeatureSpec,
        latent_widths: Sequence[int],
        hidden: Sequence[int] = (64, 64),
        smoothing: float = 0.05,
        global_weight: bool = False,
        gauge_penalty: float = 0.0,
    ) -> None:
        if len(branches) < 2 or len(scales) != len(branches) or len(latent_widths) != len(branches):
            raise AdaScaleError(f"a mixture needs K >= 2 branches with one scale and one latent width each, got {len(branches)}")
        if not 0.0 < smoothing <= 0.25:
            raise AdaScaleError(f"smoothing must be in (0, 0.25] for continuous forces, got {smoothing}")
        species = sorted(set.intersection(*(set(branch.species) for branch in branches)))
        super().__init__(species, max([spec.cutoff] + [branch.cutoff for branch in branches]))
        self.branches = nn.ModuleList(branches)
        self.scales = [float(s) for s in scales]
        self.spec = spec
        self.geometry = GeometricFeatures(spec)
        self.latent_widths = [int(w) for w in latent_widths]
        self.hidden = [int(h) for h in hidden]
        self.smoothing = float(smoothing)
        self.global_weight = bool(global_weight)
        self.gauge_penalty = float(gauge_penalty)
        if self.global_weight:  # one scale u for all atoms, starting midway
            self.global_scale = nn.Parameter(torch.tensor(0.5 * (self.scales[0] + self.scales[-1])))
        else:
            self.router = RouterNet(len(spec.names) + sum(self.latent_widths), 1, self.hidden)
        self.energy_offsets = nn.Parameter(torch.zeros(len(branches), len(species)))  # (K, S) eV

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "branches": [branch.config() for branch in self.branches],
            "scales": self.scales,
            "spec": self.spec.to_dict(),
            "latent_widths": self.latent_widths,
            "hidden": self.hidden,
            "smoothing": self.smoothing,
            "global_weight": self.global_weight,
            "gauge_penalty": self.gauge_penalty,
        }

    @classmethod
    def from_config(cls, settings: dict, build: Callable[[dict], Branch]) -> AdaptiveMixture:
        """Rebuild from :meth:`config` without its kind; ``build`` makes each branch from its nested config."""
        settings = dict(settings)
        branches = [build(branch) for branch in settings.pop("branches")]
        return cls(branches, spec=FeatureSpec(**settings.pop("spec")), **settings)

    def components(self, batch: AtomsBatch) -> tuple[Tensor, Tensor]:
        """Per-branch atom energies (n, K) eV (without offsets) and router inputs (n, F).

        ``batch`` must reach the mixture's cutoff; each branch reads its own sub-list."""
        energies: list[Tensor] = []
        inputs = [self.geometry(batch)]
        for k, branch in enumerate(self.branches):
            energy, latent = branch.atom_energies(batch.within(branch.cutoff))
            energies.append(energy)
            if self.latent_widths[k] > 0:
                inputs.append(latent)
        return torch.stack(energies, dim=1), torch.cat(inputs, dim=1)

    def interaction_range(self) -> float:
        """The longest of the branches' ranges and the router features' reach (Å)."""
        return max([self.geometry.cutoff] + [branch.interaction_range() for branch in self.branches])

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    def weights(self, inputs: Tensor) -> Tensor:
        """(n, K) router weights from router inputs (n, F); rows sum to 1."""
        scales = torch.tensor(self.scales, dtype=inputs.dtype, device=inputs.device)
        if hasattr(self, "global_scale"):  # TorchScript resolves hasattr when compiling: one of the two exists
            u = self.global_scale.expand(inputs.shape[0])
        else:
            u = self.router(inputs)[:, 0]
        return anchor_weights(u, scales, self.smoothing)

    def mix(self, energies: Tensor, inputs: Tensor, numbers: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed atom energies (n,) eV and weights (n, K) from :meth:`components` outputs."""
        w, aligned = self.weights(inputs), self.aligned(energies, numbers)
        return (w * aligned).sum(dim=1), w

    def aligned(self, energies: Tensor, numbers: Tensor) -> Tensor:
        """(n, K) branch atom energies plus their per-species offsets, eV: what the weights mix."""
        return energies + self.energy_offsets.T[self.species_index(numbers)]

    def atom_energies(self, batch: AtomsBatch) -> tuple[Tensor, Tensor]:
        """((n,) mixed atom energies eV, (n, 2K) latent features: router weights, then aligned branch energies)."""
        energies, inputs = self.components(batch)
        mixed, w = self.mix(energies, inputs, batch.numbers)
        return mixed, torch.cat([w, self.aligned(energies, batch.numbers)], dim=1)

    def auxiliary_loss(self, outputs: dict, batch: AtomsBatch) -> Tensor:
        """gauge_penalty x mean over atoms of sum_{k<l} w_ik w_il (e_ik - e_il)^2 (eV^2).

        Where an atom mixes branches k and l, the router's own force term is
        sum_k e_ik dw_ik/dR: it vanishes only if their aligned energies agree. Unfrozen
        branches trained jointly are free to agree there, and this term asks them to.
        """
        features = outputs["features"]
        k = self.n_branches
        w, e = features[:, :k], features[:, k:]
        pairs = (w[:, :, None] * w[:, None, :]) * (e[:, :, None] - e[:, None, :]) ** 2  # (n, K, K), symmetric
        return self.gauge_penalty * 0.5 * pairs.sum(dim=(1, 2)).mean()
