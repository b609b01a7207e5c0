"""A model's force errors on labelled frames, as report entries: the one scoring of every deployable model.

Fixed branches, the scale-conditioned model, mixtures: whatever maps an AtomsBatch to forces is
scored the same way, per sample (ℓ_i = mean over x, y, z of |F_pred - F_ref|, eV/Å), then per
subset (all, ions, close contact) with frame-bootstrap intervals (:mod:`adascale.scales.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adascale.data.frames import Frame
from adascale.data.regimes import DEFAULT_ION_SPECIES, nearest_ion_distance, subset_masks
from adascale.models.inference import module_forces
from adascale.scales.metrics import FrameBootstrap, ReportContext, method_entry
from adascale.units import force_unit_factor


def sample_losses(model, frames: Sequence[Frame], *, path: object = None) -> np.ndarray:
    """(N,) per-sample force losses ℓ_i in eV/Å of ``model`` on ``frames`` (atoms in frame order)."""
    forces = np.concatenate(module_forces(model, frames, name=getattr(model, "kind", "model"), path=path).forces)
    return np.abs(forces - np.concatenate([frame.forces for frame in frames])).mean(axis=1)


def frames_masks(frames: Sequence[Frame], ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES) -> tuple[dict, np.ndarray]:
    """The subset masks (all, ions, close_contact) of the atoms of ``frames`` and each atom's frame index."""
    species = np.concatenate([frame.numbers for frame in frames])
    d_ion = np.concatenate([nearest_ion_distance(f.positions, f.numbers, f.cell, f.pbc, ion_species) for f in frames])
    frame_index = np.repeat(np.arange(len(frames)), [len(frame) for frame in frames])
    return subset_masks(species, d_ion, ion_species=ion_species), frame_index


def losses_entry(
    losses: np.ndarray,
    frames: Sequence[Frame],
    context: ReportContext = ReportContext(),
    **extra,
) -> dict:
    """A ``methods`` entry (MAE per subset in ``context.units``, 95 % frame-bootstrap CI) of per-sample
    ``losses`` (N,) eV/Å; the subsets follow ``context.ion_species``."""
    masks, frame_index = frames_masks(frames, context.ion_species)
    bootstrap = FrameBootstrap(frame_index, masks, n_resamples=context.n_resamples)
    return method_entry(losses, masks, bootstrap=bootstrap, factor=force_unit_factor(context.units), **extra)
