"""A standardised multilayer perceptron: the learnable map of every router."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class RouterNet(nn.Module):
    """Standardisation (buffers fitted on training features) then an MLP: (N, F) -> (N, n_out)."""

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        layers: list[nn.Module] = []
        width = n_in
        for size in hidden:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)

    def fit_standardisation(self, x: torch.Tensor) -> None:
        """Set mean and std from training features (N, F); constant features keep std 1."""
        std = x.std(dim=0)
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(torch.where(std > 1e-6 * (1 + x.abs().max(dim=0).values), std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp((x - self.mean) / self.std)
