"""Training data: frames with cached neighbour lists, batched into tensors, and the fitted statistics.

Neighbour lists are built once per frame (vesin) and cached compactly (int32 indices,
int8 cell shifts: ~11 bytes per edge); edge vectors are recomputed every step because
forces need their gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from adascale.data.frames import Frame
from adascale.data.neighbours import neighbour_list
from adascale.data.regimes import nearest_ion_distance
from adascale.errors import AdaScaleError
from adascale.models.base import N_ELEMENTS
from adascale.models.batch import AtomsBatch


@dataclass
class CompactPairs:
    """A neighbour list stored small: ``i``, ``j`` (E,) int32 and ``shifts`` (E, 3) int8 (int32 if needed)."""

    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray

    @classmethod
    def build(cls, frame: Frame, cutoff: float) -> CompactPairs:
        pairs = neighbour_list(frame, cutoff)
        shift_type = np.int8 if len(pairs.shifts) == 0 or np.abs(pairs.shifts).max() < 128 else np.int32
        return cls(pairs.i.astype(np.int32), pairs.j.astype(np.int32), pairs.shifts.astype(shift_type))


@dataclass
class LabelledBatch:
    """One optimizer step's data: the atoms, reference forces (n, 3) eV/Å, energies (B,) eV (NaN if
    absent), per-atom force-loss weights (n,) and stresses (B, 3, 3) eV/Å³ (NaN where a frame has none)."""

    atoms: AtomsBatch
    forces: Tensor
    energy: Tensor
    weights: Tensor
    stress: Tensor


class FrameDataset:
    """Labelled frames at one cutoff; ``batch(indices)`` builds tensors from the cached neighbour lists."""

    def __init__(
        self,
        frames: Sequence[Frame],
        cutoff: float,
        dtype: torch.dtype = torch.float32,
        species_weights: dict[int, float] | None = None,
    ) -> None:
        if not frames:
            raise AdaScaleError("no frames to train on")
        self.frames = list(frames)
        self.cutoff = float(cutoff)
        self.dtype = dtype
        weights = species_weights or {}
        self.atom_weights = [np.array([weights.get(int(z), 1.0) for z in f.numbers]) for f in self.frames]
        self._pairs: list[CompactPairs | None] = [None] * len(self.frames)
        # a stress label counts only in a cell periodic in 3D (the strain derivative needs a volume)
        self.has_stress = np.array([f.stress is not None and bool(np.all(f.pbc)) for f in self.frames])

    def __len__(self) -> int:
        return len(self.frames)

    def pairs(self, index: int) -> CompactPairs:
        if self._pairs[index] is None:
            self._pairs[index] = CompactPairs.build(self.frames[index], self.cutoff)
        return self._pairs[index]

    def batch(self, indices: Sequence[int]) -> LabelledBatch:
        parts = [AtomsBatch.from_frame(self.frames[k], self.cutoff, dtype=self.dtype, neighbours=self.pairs(k)) for k in indices]
        frames = [self.frames[k] for k in indices]
        forces = torch.as_tensor(np.concatenate([f.forces for f in frames]), dtype=self.dtype)
        energy = torch.tensor([np.nan if f.energy is None else f.energy for f in frames], dtype=self.dtype)
        weights = torch.as_tensor(np.concatenate([self.atom_weights[k] for k in indices]), dtype=self.dtype)
        stress = np.stack([f.stress if self.has_stress[k] else np.full((3, 3), np.nan) for k, f in zip(indices, frames)])
        return LabelledBatch(AtomsBatch.concatenate(parts), forces, energy, weights, torch.as_tensor(stress, dtype=self.dtype))

    def atom_counts(self) -> np.ndarray:
        """(frames,) atoms per frame."""
        return np.array([len(f) for f in self.frames])

    def weight_sums(self) -> np.ndarray:
        """(frames,) sum of the atoms' force-loss weights per frame."""
        return np.array([w.sum() for w in self.atom_weights])

    def average_neighbours(self) -> float:
        """Mean neighbours per atom within the cutoff (normalises message sums)."""
        edges = sum(len(self.pairs(k).i) for k in range(len(self)))
        return max(edges / self.atom_counts().sum(), 1.0)

    def closest_distances(self) -> list[list[float]]:
        """[[Z_a, Z_b, r], ...]: the closest distance (Å) of each species pair (Z_a <= Z_b) within the
        cutoff over all frames, the onsets of the models' pair repulsion."""
        closest = np.full((N_ELEMENTS, N_ELEMENTS), np.inf)
        for k, frame in enumerate(self.frames):
            pairs = self.pairs(k)
            vectors = frame.positions[pairs.j] - frame.positions[pairs.i] + pairs.shifts @ np.asarray(frame.cell)
            a, b = np.sort(np.stack([frame.numbers[pairs.i], frame.numbers[pairs.j]]), axis=0)
            np.minimum.at(closest, (a, b), np.linalg.norm(vectors, axis=1))
        a, b = np.nonzero(np.isfinite(closest))
        return [[int(za), int(zb), float(closest[za, zb])] for za, zb in zip(a, b)]

    def nearest_ion_nm(self) -> list[np.ndarray]:
        """Per frame, (n,) nearest-ion distances in nm (for the ions / close-contact metrics)."""
        return [nearest_ion_distance(f.positions, f.numbers, f.cell, f.pbc) for f in self.frames]


def training_species(frames: Sequence[Frame]) -> list[int]:
    """Sorted atomic numbers present in the training frames."""
    return sorted({int(z) for f in frames for z in np.unique(f.numbers)})


def fit_species_shifts(frames: Sequence[Frame], species: Sequence[int]) -> np.ndarray:
    """(S,) eV per atom: least squares of frame energies on species counts (zeros without energies).

    When every frame has the same composition the system is rank deficient and the
    minimum-norm solution is taken: it still reproduces the mean energy exactly.
    """
    labelled = [f for f in frames if f.energy is not None]
    if not labelled:
        return np.zeros(len(species))
    counts = np.array([[np.sum(f.numbers == z) for z in species] for f in labelled], dtype=float)
    energies = np.array([f.energy for f in labelled], dtype=float)
    shifts, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return shifts


def force_rms(frames: Sequence[Frame]) -> float:
    """RMS of the reference force components (eV/Å): the natural energy scale of the network output (per Å)."""
    values = np.concatenate([np.ravel(f.forces) for f in frames])
    return float(np.sqrt(np.mean(values**2))) or 1.0
