"""Electrostatics of learned point charges: torch-pme Ewald/PME on periodic cells, direct Coulomb for molecules.

Energy convention (rock-salt NaCl gives its Madelung constant this way): torch-pme returns
per-atom potentials phi_i such that the energy is E = sum_i q_i phi_i with no extra 1/2 (it halves the pair sums itself), in eV
with charges in e and lengths in Å through ``torchpme.prefactors.eV_A``.

Short-range exclusion. Point-charge Coulomb between atoms a bond apart is huge and is
exactly what force fields exclude (the testbed's rigid-water labels hold no
intramolecular Coulomb at all). The local model describes everything inside its cutoff
anyway, so pairs closer than ``exclusion_inner`` are removed from the electrostatic
energy and the removal is switched off smoothly (C2 smoothstep) by ``exclusion_outer``:

    E = sum_{i<j} q_i q_j (1 - f(r_ij)) / r_ij   (over all periodic images)

computed as torch-pme's full point-charge sum minus the excluded part, the latter over
the branch's own neighbour list (so ``exclusion_outer`` must not exceed its cutoff).

Periodic accuracy. The real-space part uses the branch's neighbour list, so the Ewald
splitting is tied to its cutoff r_c: smearing sigma = r_c / 5 leaves erfc(r_c / (sqrt(2) sigma))
~ 6e-7 of a pair term outside r_c. Ewald keeps every k with exp(-sigma^2 k^2 / 2) > e^-12
(torch-pme's k-grid spans +-pi / lr_wavelength, so ``lr_wavelength = pi sigma / sqrt(24)``):
relative energy error ~1e-7. PME uses torch-pme ``mesh_spacing = sigma`` (its grid rounds
2 L / spacing + 1 up to a power of two, so the actual spacing is <= sigma / 2) with 5-node
interpolation: relative error ~1e-4. ``tests/models`` checks both against an independent
Ewald sum and the rock-salt Madelung constant.
"""

from __future__ import annotations

import math

import torch
import torchpme
from torch import Tensor, nn

from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.nn.smooth import switch

METHODS = ("ewald", "pme")


def exclusion_switch(r: Tensor, inner: float, outer: float) -> Tensor:
    """(E,) 1 for r <= inner, 0 for r >= outer, a C2 smoothstep between (1/2 at the midpoint).

    Not torch-pme's own ``Potential(exclusion_radius=R)``: its window 1 - ((1 - cos(pi r / R)) / 2)^n
    has no plateau (it is 1 only at r = 0, so it would also thin the exclusion of pairs inside
    ``inner``), is only C1 at R for every n, and is applied inside the potential for every pair
    of every method; trained charges rely on this window, so it stays.
    """
    return switch(r, outer, outer - inner)


class Electrostatics(nn.Module):
    """Per-atom electrostatic potentials phi (n,) in V for charges q (n,) in e; E = sum q phi."""

    def __init__(
        self,
        cutoff: float,
        method: str = "pme",
        exclusion_inner: float = 2.0,
        exclusion_outer: float = 3.0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise AdaScaleError(f"electrostatics method must be one of {METHODS}, got {method!r}")
        if not 0 < exclusion_inner < exclusion_outer <= cutoff:
            raise AdaScaleError(
                f"need 0 < exclusion_inner ({exclusion_inner}) < exclusion_outer ({exclusion_outer}) <= cutoff ({cutoff}) Å"
            )
        self.cutoff = float(cutoff)
        self.method = method
        self.exclusion_inner = float(exclusion_inner)
        self.exclusion_outer = float(exclusion_outer)
        self.smearing = cutoff / 5.0
        self.coulomb = torchpme.Calculator(torchpme.CoulombPotential(prefactor=torchpme.prefactors.eV_A), full_neighbor_list=True)
        smeared = torchpme.CoulombPotential(smearing=self.smearing, prefactor=torchpme.prefactors.eV_A)
        if method == "ewald":
            self.periodic = torchpme.EwaldCalculator(
                smeared, lr_wavelength=math.pi * self.smearing / math.sqrt(24.0), full_neighbor_list=True
            )
        else:
            self.periodic = torchpme.PMECalculator(
                smeared, mesh_spacing=self.smearing, interpolation_nodes=5, full_neighbor_list=True
            )
        # torch-pme's buffers (smearing, prefactor, mesh kernels) follow from the settings
        # above: re-registered as non-persistent (public API), they stay out of saved weights,
        # which then do not depend on torch-pme's internals (and load as before).
        for module in self.modules():
            for name, buffer in list(module.named_buffers(recurse=False, remove_duplicate=False)):
                module.register_buffer(name, buffer, persistent=False)

    def forward(self, charges: Tensor, batch: AtomsBatch, edge_vectors: Tensor, exclude: bool = True) -> Tensor:
        """charges (n,) e, batch an AtomsBatch, edge_vectors (E, 3) Å of its edges -> phi (n,) V.

        ``exclude=False`` gives plain point-charge potentials (no short-range exclusion).
        """
        distances = torch.linalg.vector_norm(edge_vectors, dim=1)
        edge_frame = batch.frame_index[batch.edge_index[0]]
        counts: list[int] = batch.atoms_per_frame().tolist()
        phi: list[Tensor] = []
        start = 0
        for b, count in enumerate(counts):  # a frame's atoms are contiguous
            q = charges[start : start + count, None]
            positions = batch.positions[start : start + count]
            edges = edge_frame == b
            pairs = (batch.edge_index[:, edges] - start).T  # (E_b, 2) indices within the frame
            r = distances[edges]
            periodic = batch.pbc[b]
            if bool(periodic.all()):
                phi_b = self.periodic(q, batch.cell[b], positions, pairs, r)
            elif not bool(periodic.any()):
                all_pairs, all_r = _all_pairs(positions)
                phi_b = self.coulomb(q, batch.cell[b], positions, all_pairs, all_r)
            else:
                pbc: list[bool] = periodic.tolist()
                raise AdaScaleError(f"frame {b}: electrostatics needs a fully periodic cell or a molecule, got pbc={pbc}")
            if exclude:
                phi_b = phi_b - self._excluded(q, pairs, r)
            phi.append(phi_b[:, 0])
            start += count
        return torch.cat(phi)

    def _excluded(self, q: Tensor, pairs: Tensor, r: Tensor) -> Tensor:
        """(n, 1) potential of the excluded short-range part, 1/2 sum_j q_j f(r_ij)/r_ij (full list)."""
        close = r < self.exclusion_outer
        i, j, r = pairs[close, 0], pairs[close, 1], r[close]
        kernel = torchpme.prefactors.eV_A * exclusion_switch(r, self.exclusion_inner, self.exclusion_outer) / r
        return torch.zeros_like(q).index_add(0, i, 0.5 * q[j] * kernel[:, None])


def _all_pairs(positions: Tensor) -> tuple[Tensor, Tensor]:
    """Every ordered pair i != j of a molecule: ((P, 2) indices, (P,) distances in Å)."""
    n = positions.shape[0]
    i, j = torch.meshgrid(torch.arange(n, device=positions.device), torch.arange(n, device=positions.device), indexing="ij")
    off_diagonal = i != j
    i, j = i[off_diagonal], j[off_diagonal]
    return torch.stack([i, j], dim=1), torch.linalg.vector_norm(positions[j] - positions[i], dim=1)
