"""Radial bases for edge lengths (Å): the Bessel basis, complete on [0, r_c].

sqrt(2/r_c) sin(n pi r / r_c) / r (n = 1..N) costs one sin per basis function. Models
multiply it by a smooth envelope (:func:`adascale.nn.smooth.polynomial_envelope`) so that
every radial term vanishes at the cutoff with its first two derivatives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class BesselBasis(nn.Module):
    """(E,) distances in Å -> (E, n_basis) values of sqrt(2/r_c) sin(n pi r/r_c)/r."""

    def __init__(self, n_basis: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("frequencies", torch.arange(1, n_basis + 1, dtype=torch.float32) * math.pi / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        prefactor = math.sqrt(2.0 / self.cutoff)
        return prefactor * torch.sin(r[:, None] * self.frequencies) / r[:, None]
