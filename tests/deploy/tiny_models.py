"""Tiny float64 branches and mixtures with random weights, for the deployment tests."""

from __future__ import annotations

import torch

from adascale.models.long_range import LongRangePaiNN
from adascale.models.mixture import AdaptiveMixture
from adascale.models.painn import PaiNN
from adascale.training.mixture import MixtureSettings, build_mixture
from models.branch_checks import SPECIES, water_ion_frame

#: Router features up to 4 Å, so 8.5 Å boxes pass the calculator's minimum-image check.
TINY = MixtureSettings(dtype="float64", hidden=(8,), feature_radii=(2.5, 4.0))


def make_branches(seed: int = 0) -> list:
    """A local (3 Å) and a long-range (4 Å, Ewald) branch with random weights, float64."""
    torch.manual_seed(seed)
    local = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=10.0)
    long_range = LongRangePaiNN(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=10.0, electrostatics="ewald")
    local.set_energy_statistics([-1.0, -3.0, -5.0, -2.0], 0.5)  # per-species shifts differ between the
    long_range.set_energy_statistics([-1.5, -2.0, -4.0, -3.0], 0.5)  # branches, as after separate training
    return [local.double().eval(), long_range.double().eval()]


def make_mixture(seed: int = 0, settings: MixtureSettings = TINY) -> AdaptiveMixture:
    """A mixture whose router and offsets are random but far from uniform, so that the router's
    own gradient is a large part of the forces."""
    mixture = build_mixture(make_branches(seed), [0.0, 1.0], water_ion_frame(6, 1, 8.5, seed=0), settings, (11, 17))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in mixture.router.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        mixture.energy_offsets.copy_(torch.randn(mixture.energy_offsets.shape, generator=generator, dtype=torch.float64))
    return mixture
