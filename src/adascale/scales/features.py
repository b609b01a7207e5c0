"""Inference-time per-atom features for routers: they read positions, never labels.

Two families:

* **Geometric** features of an atom's environment, written once in torch so that the
  conservative mixture can differentiate them (forces include the router's own gradient):
  species one-hot, a smooth nearest-ion distance, and smooth coordination counts of each
  species at a few radii. Every term is C2 in the positions (a quintic "smootherstep"
  switch), so MD through a router built on them sees continuous forces. The numpy entry
  :func:`frame_features` evaluates them for a frame (e.g. at predict time, to store in
  ``PredictionSet.extras[ROUTER_FEATURES_KEY]``).
* **Force** features of the branches' predictions (:func:`force_features`): how much the
  branches disagree, |F_b − F_a|, and how large each branch's force is. They need the
  branches' forces, so they serve the per-atom force-mixing router only: a conservative
  mixture built on them would need second derivatives of the branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.errors import located

#: ``PredictionSet.extras`` key holding geometric features (N, F), and the metadata key of their spec.
ROUTER_FEATURES_KEY = "router_features"
ROUTER_SPEC_KEY = "router_feature_spec"


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


def switch(r: torch.Tensor, outer: float, width: float) -> torch.Tensor:
    """C2 step: 1 for r <= outer − width, 0 for r >= outer, quintic smootherstep between."""
    x = ((r - (outer - width)) / width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (x * (6.0 * x - 15.0) + 10.0)


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


def frame_features(frame, spec: FeatureSpec) -> np.ndarray:
    """Geometric features (n, F) float64 of one :class:`adascale.data.frames.Frame` (no labels read)."""
    from adascale.models.batch import AtomsBatch

    with torch.no_grad():
        return geometric_features(AtomsBatch.from_frame(frame, spec.cutoff, dtype=torch.float64), spec).numpy()


def samples_features(frames: Sequence, frame_index: np.ndarray, atom_index: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Geometric features (N, F) of the samples (frame_index[i], atom_index[i]) of a prediction set."""
    frame_index = np.asarray(frame_index)
    atom_index = np.asarray(atom_index)
    out = np.empty((len(frame_index), len(spec.names)))
    for f in np.unique(frame_index):
        rows = np.flatnonzero(frame_index == f)
        out[rows] = frame_features(frames[int(f)], spec)[atom_index[rows]]
    return out


def attach_router_features(predictions, frames: Sequence, spec: FeatureSpec, *, path: object = None) -> None:
    """Store geometric features of ``frames`` (the frames ``predictions`` was made on) in
    ``predictions.extras[ROUTER_FEATURES_KEY]`` and the spec in its metadata.

    Raises AdaScaleError (naming ``path``) when the frames do not match the samples.
    """
    frame_index, atom_index = np.asarray(predictions.frame), np.asarray(predictions.atom)
    if frame_index.max() >= len(frames):
        raise located(f"prediction set refers to frame {frame_index.max()}, the file has {len(frames)}", path=path)
    for f in np.unique(frame_index):
        rows = np.flatnonzero(frame_index == f)
        numbers = np.asarray(frames[int(f)].numbers)
        if atom_index[rows].max() >= len(numbers) or (numbers[atom_index[rows]] != predictions.species[rows]).any():
            raise located("atoms differ from the prediction set's species", path=path, frame=int(f))
    predictions.extras[ROUTER_FEATURES_KEY] = samples_features(frames, frame_index, atom_index, spec)
    predictions.metadata[ROUTER_SPEC_KEY] = spec.to_dict()


def force_features(pred: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Features of the branches' forces pred (K, N, 3) eV/Å → ((N, 2K − 1), names).

    log(1 + |F_{k+1} − F_k| / (eV/Å)) for each adjacent anchor pair, then log(1 + |F_k|)
    for each anchor: rotation invariant, heavy tails compressed.
    """
    pred = np.asarray(pred, dtype=float)
    k = pred.shape[0]
    gaps = np.linalg.norm(np.diff(pred, axis=0), axis=-1)  # (K-1, N)
    norms = np.linalg.norm(pred, axis=-1)  # (K, N)
    names = [f"log1p_gap_{a}_{a + 1}" for a in range(k - 1)] + [f"log1p_force_{a}" for a in range(k)]
    return np.log1p(np.concatenate([gaps, norms], axis=0)).T, names
