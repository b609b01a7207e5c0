"""Radial basis for edge lengths: Bessel functions times a smooth polynomial envelope.

The Bessel basis sqrt(2/r_c) sin(n pi r / r_c) / r (n = 1..N) is cheap (one sin per
basis function) and complete on [0, r_c]. The envelope (DimeNet, exponent p) goes to
zero at r_c together with its first and second derivatives, so energies, forces and
force derivatives stay continuous when an atom crosses the cutoff.
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


def polynomial_envelope(r: Tensor, cutoff: float, exponent: int = 6) -> Tensor:
    """(E,) smooth cutoff factor: 1 at r=0, 0 with zero first and second derivatives at r >= cutoff."""
    x = (r / cutoff).clamp(max=1.0)
    p = exponent
    value = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where(r < cutoff, value, torch.zeros_like(value))
