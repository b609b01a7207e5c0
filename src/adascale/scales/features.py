"""Inference-time per-atom features for routers on prediction sets: they read positions, never labels.

Two families:

* **Geometric** features (:mod:`adascale.models.features`, written in torch so that models
  can differentiate them): :func:`frame_features` evaluates them for a frame, e.g. at
  predict time, to store in ``PredictionSet.extras[ROUTER_FEATURES_KEY]``.
* **Force** features of the branches' predictions (:func:`force_features`): how much the
  branches disagree, |F_b − F_a|, and how large each branch's force is. They need the
  branches' forces, so they serve the per-atom force-mixing router only: a conservative
  mixture built on them would need second derivatives of the branches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from adascale.errors import located
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec, geometric_features

#: ``PredictionSet.extras`` key holding geometric features (N, F), and the metadata key of their spec.
ROUTER_FEATURES_KEY = "router_features"
ROUTER_SPEC_KEY = "router_feature_spec"


def frame_features(frame, spec: FeatureSpec) -> np.ndarray:
    """Geometric features (n, F) float64 of one :class:`adascale.data.frames.Frame` (no labels read)."""
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


def attach_features_from_files(sets: Sequence, paths: Sequence) -> None:
    """Geometric router features of each prediction set from the frame file it was predicted on
    (``paths``, same order), all with one spec: the species of every set and the ion species of the first."""
    from adascale.data.frames import read_frames
    from adascale.errors import AdaScaleError

    if len(paths) != len(sets):
        raise AdaScaleError(f"--frames: give one frame file per prediction set ({len(sets)}), got {len(paths)}")
    spec = FeatureSpec(
        species=tuple(np.unique(np.concatenate([s.species for s in sets])).tolist()),
        ion_species=tuple(sets[0].metadata["ion_species"]),
    )
    for predictions, path in zip(sets, paths):
        attach_router_features(predictions, read_frames(path, require_forces=False), spec, path=path)
