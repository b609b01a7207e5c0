"""AtomsBatch: edge vectors, filtering to smaller cutoffs, and concatenation."""

from __future__ import annotations

import numpy as np
import torch
from branch_checks import water_ion_frame

from adascale.data.frames import Frame
from adascale.models.batch import AtomsBatch


def edge_set(batch: AtomsBatch) -> set[tuple]:
    i, j = batch.edge_index.tolist()
    return {(a, b, *map(int, s)) for a, b, s in zip(i, j, batch.shifts.tolist())}


def test_edge_vectors_are_minimum_image_pairs_in_a_triclinic_cell():
    frame = water_ion_frame(8, 1, 8.0, seed=0)
    frame.cell = np.array([[8.0, 0, 0], [2.0, 8.5, 0], [1.0, -1.5, 9.0]])
    batch = AtomsBatch.from_frames([frame], 3.0, dtype=torch.float64)
    vectors = batch.edge_vectors().numpy()
    i, j = batch.edge_index.numpy()
    expected = frame.positions[j] - frame.positions[i] + batch.shifts.numpy() @ frame.cell
    assert np.allclose(vectors, expected)
    assert (np.linalg.norm(vectors, axis=1) < 3.0).all()
    # brute force over images: every pair closer than 3 Å is in the list
    images = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3) @ frame.cell
    d = frame.positions[None, :, None, :] - frame.positions[:, None, None, :] + images[None, None]
    r = np.linalg.norm(d, axis=-1)
    r[np.arange(len(r)), np.arange(len(r)), len(images) // 2] = np.inf  # an atom is not its own neighbour
    assert (r < 3.0).sum() == len(vectors)


def test_within_equals_a_fresh_list_at_the_smaller_cutoff():
    frame = water_ion_frame(12, 2, 9.0, seed=1)
    wide = AtomsBatch.from_frames([frame], 5.0, dtype=torch.float64)
    narrow = wide.within(3.0)
    assert narrow.cutoff == 3.0
    assert edge_set(narrow) == edge_set(AtomsBatch.from_frames([frame], 3.0))
    assert wide.within(6.0) is wide


def test_concatenate_offsets_atoms_frames_and_edges():
    frames = [water_ion_frame(4, 1, 6.0, seed=s) for s in (2, 3)]
    molecule = Frame(
        np.array([8, 1, 1]), np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), np.zeros((3, 3)), np.zeros(3, bool), None, None
    )
    parts = [AtomsBatch.from_frames([f], 3.0) for f in frames + [molecule]]
    batch = AtomsBatch.concatenate(parts)
    sizes = [len(f) for f in frames] + [3]
    assert batch.n_frames == 3 and batch.atoms_per_frame().tolist() == sizes
    assert batch.frame_index.tolist() == sum(([k] * n for k, n in enumerate(sizes)), [])
    assert torch.allclose(batch.edge_vectors(), torch.cat([p.edge_vectors() for p in parts]))
    centre_frame = batch.frame_index[batch.edge_index[0]]
    assert torch.equal(centre_frame, batch.frame_index[batch.edge_index[1]])


def test_edge_vectors_differentiate_through_the_cell():
    """d(sum |r_ij|^2)/d(cell) exists, so strain derivatives (stress) are possible."""
    batch = AtomsBatch.from_frames([water_ion_frame(4, 1, 6.0, seed=4)], 3.0, dtype=torch.float64)
    cell = batch.cell.clone().requires_grad_(True)
    batch.cell = cell
    (grad,) = torch.autograd.grad((batch.edge_vectors() ** 2).sum(), cell)
    assert grad.abs().sum() > 0
