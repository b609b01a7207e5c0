"""Shared checks for anything that behaves like a branch (NequIP-style model tests).

Usage: subclass :class:`BranchChecks` in a test module and implement ``make_branch()``
returning a float64 module in eval mode with ``cutoff``, ``species`` and a ``forward(batch)``
that returns ``energy`` (B,) and ``forces`` (n, 3). Every check runs on small frames built
here (rigid waters and Na/Cl ions, periodic and molecular). From another test folder:
``from models.branch_checks import BranchChecks`` (``tests/`` is on ``sys.path``).

Set ``separable = False`` for models with interactions beyond the cutoff (electrostatics):
their energy of two far-apart fragments is not the sum of the fragments' energies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from adascale.data.frames import Frame
from adascale.models.batch import AtomsBatch

SPECIES = (1, 8, 11, 17)
_O_H = 1.0  # Å, SPC/E geometry
_HOH = np.deg2rad(109.47)


def water_ion_frame(
    n_waters: int,
    n_ion_pairs: int,
    box: float,
    *,
    seed: int,
    periodic: bool = True,
    spacing_jitter: float = 0.3,
) -> Frame:
    """Rigid waters and Na/Cl ions on a jittered grid in a cubic box (Å); molecules get a zero cell."""
    rng = np.random.default_rng(seed)
    n_sites = n_waters + 2 * n_ion_pairs
    per_side = int(np.ceil(n_sites ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[rng.permutation(len(grid))[:n_sites]]
    centres = (grid + 0.5 + rng.uniform(-spacing_jitter, spacing_jitter, grid.shape)) * box / per_side
    water = np.array([[0, 0, 0], [_O_H, 0, 0], [_O_H * np.cos(_HOH), _O_H * np.sin(_HOH), 0]])
    numbers, positions = [], []
    for k, centre in enumerate(centres):
        if k < n_waters:
            numbers += [8, 1, 1]
            positions += list(centre + Rotation.random(random_state=rng.integers(1 << 31)).apply(water - water.mean(0)))
        else:
            numbers.append(11 if (k - n_waters) % 2 == 0 else 17)
            positions.append(centre)
    n = len(numbers)
    cell = np.eye(3) * box if periodic else np.zeros((3, 3))
    return Frame(
        numbers=np.array(numbers, dtype=np.int64),
        positions=np.array(positions),
        cell=cell,
        pbc=np.full(3, periodic),
        forces=np.zeros((n, 3)),
        energy=0.0,
    )


def evaluate(branch, frames, cutoff: float | None = None) -> dict[str, torch.Tensor]:
    """Run ``branch`` on frames batched in float64."""
    batch = AtomsBatch.from_frames(frames, cutoff or branch.cutoff, dtype=torch.float64)
    return branch(batch)


class BranchChecks:
    """Checks every branch must pass; see the module docstring."""

    separable: bool = True
    force_tolerance: float = 1e-6  # eV/Å, float64 finite differences and symmetry checks

    def make_branch(self):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def branch(cls):
        torch.manual_seed(0)
        return cls().make_branch()

    @pytest.fixture(scope="class")
    @classmethod
    def periodic_frame(cls):
        return water_ion_frame(10, 2, 8.5, seed=1)

    @pytest.fixture(scope="class")
    @classmethod
    def molecule(cls):
        return water_ion_frame(4, 1, 6.0, seed=2, periodic=False)

    def test_forces_are_minus_energy_gradient(self, branch, periodic_frame, molecule):
        """Central finite differences of the energy equal the forces, for both kinds of frames."""
        h = 1e-5
        for frame in (periodic_frame, molecule):
            batch = AtomsBatch.from_frames([frame], branch.cutoff, dtype=torch.float64)
            forces = branch(batch)["forces"]
            for atom in (0, 1, len(frame) - 1):
                for axis in range(3):
                    energies = []
                    for sign in (+1, -1):
                        positions = batch.positions.clone()
                        positions[atom, axis] += sign * h
                        energies.append(branch(batch.with_positions(positions))["energy"].sum())
                    numeric = -(energies[0] - energies[1]) / (2 * h)
                    assert abs(float(numeric - forces[atom, axis])) < 1e-6 + 1e-5 * abs(float(numeric))

    def test_rotation_translation_equivariance(self, branch, periodic_frame, molecule):
        """E(R x + t) = E(x) and F(R x + t) = R F(x); periodic cells rotate with the atoms."""
        rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
        shift = np.array([0.7, -2.3, 5.1])
        for frame in (periodic_frame, molecule):
            moved = Frame(
                numbers=frame.numbers,
                positions=frame.positions @ rotation.T + shift,
                cell=frame.cell @ rotation.T,
                pbc=frame.pbc,
                forces=None,
                energy=None,
            )
            before, after = evaluate(branch, [frame]), evaluate(branch, [moved])
            assert torch.allclose(after["energy"], before["energy"], atol=1e-8, rtol=1e-10)
            rotated = before["forces"] @ torch.as_tensor(rotation).T
            assert torch.allclose(after["forces"], rotated, atol=self.force_tolerance)

    def test_batch_equals_single_frames(self, branch, periodic_frame, molecule):
        """A batch of frames gives exactly what each frame gives alone (no cross-talk)."""
        frames = [periodic_frame, molecule, water_ion_frame(6, 1, 7.5, seed=3)]
        together = evaluate(branch, frames)
        alone = [evaluate(branch, [frame]) for frame in frames]
        assert torch.allclose(together["energy"], torch.cat([a["energy"] for a in alone]), atol=1e-9)
        assert torch.allclose(together["forces"], torch.cat([a["forces"] for a in alone]), atol=1e-9)

    def test_longer_neighbour_list_changes_nothing(self, branch, periodic_frame):
        """A list built beyond the branch's cutoff (as for a mixture of scales) gives the same result."""
        exact = evaluate(branch, [periodic_frame])
        wider = evaluate(branch, [periodic_frame], cutoff=branch.cutoff + 1.5)
        assert torch.allclose(exact["energy"], wider["energy"], atol=1e-9)
        assert torch.allclose(exact["forces"], wider["forces"], atol=1e-9)

    def test_smooth_at_the_cutoff(self, branch):
        """Energy and forces of an Na-Cl pair are continuous as the pair crosses the cutoff.

        Across [rc - d, rc + d] the energy may change only by what the force explains.
        """

        def pair(r: float) -> dict[str, torch.Tensor]:
            frame = Frame(
                numbers=np.array([11, 17]),
                positions=np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]),
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, bool),
                forces=None,
                energy=None,
            )
            return evaluate(branch, [frame])

        rc, delta = branch.cutoff, 1e-4
        inside, outside = pair(rc - delta), pair(rc + delta)
        work = float(inside["forces"][1, 0] + outside["forces"][1, 0]) / 2 * (2 * delta)
        assert abs(float(outside["energy"] - inside["energy"]) + work) < 1e-8
        assert torch.allclose(inside["forces"], outside["forces"], atol=1e-4)

    def test_far_apart_fragments_are_independent(self, branch, molecule):
        """Two copies of a molecule far beyond the cutoff: E = 2 E(one) and the same forces."""
        if not self.separable:
            pytest.skip("this model interacts beyond its cutoff")
        copy = Frame(
            numbers=np.concatenate([molecule.numbers, molecule.numbers]),
            positions=np.concatenate([molecule.positions, molecule.positions + [100.0, 0.0, 0.0]]),
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            forces=None,
            energy=None,
        )
        one, two = evaluate(branch, [molecule]), evaluate(branch, [copy])
        assert torch.allclose(two["energy"], 2 * one["energy"], atol=1e-9)
        assert torch.allclose(two["forces"], torch.cat([one["forces"], one["forces"]]), atol=1e-9)
