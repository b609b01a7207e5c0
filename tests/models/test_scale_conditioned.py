"""The scale-conditioned branch: shared branch checks in each scale mode, continuity in s, gating, router gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.io import build_model
from adascale.models.scale_conditioned import ScaleConditionedPaiNN
from models.branch_checks import SPECIES, BranchChecks, water_ion_frame


def make_model(**kwargs) -> ScaleConditionedPaiNN:
    settings = (
        dict(
            cutoff=4.0,
            min_radius=2.5,
            features=16,
            interactions=1,
            average_neighbours=10.0,
            electrostatics="ewald",
            router_radii=(2.0, 4.0),
            router_hidden=(8,),
        )
        | kwargs
    )
    torch.manual_seed(0)
    return ScaleConditionedPaiNN(SPECIES, **settings).double().eval()


def randomise_router(model: ScaleConditionedPaiNN, seed: int = 1) -> ScaleConditionedPaiNN:
    """Router weights far from the constant start, so scales vary strongly between atoms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.router.parameters():
            parameter.copy_(2.0 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


class TestFixedScale(BranchChecks):
    separable = False

    def make_branch(self):
        return make_model(scale_mode="fixed", fixed_scale=0.4)


class TestRouterScales(BranchChecks):
    separable = False

    def make_branch(self):
        return randomise_router(make_model(scale_mode="router"))


class TestLocalEnd(BranchChecks):
    """At s = 0 the Coulomb gate is closed: a local model (fragments beyond the cutoff are independent)."""

    def make_branch(self):
        return make_model(scale_mode="fixed", fixed_scale=0.0)


def forces_at(model: ScaleConditionedPaiNN, batch: AtomsBatch, scales: torch.Tensor) -> torch.Tensor:
    positions = batch.positions.detach().requires_grad_(True)
    energy, _ = model.energies_at(batch.with_positions(positions), scales)
    return -torch.autograd.grad(energy.sum(), positions)[0]


def test_moving_one_atoms_scale_changes_forces_continuously():
    """Forces are Lipschitz in one atom's s, also where its radius sweeps across a neighbour."""
    model = make_model()
    frame = water_ion_frame(10, 2, 8.5, seed=1)
    batch = AtomsBatch.from_frame(frame, model.cutoff, dtype=torch.float64)
    centre, neighbour = batch.edge_index
    r = torch.linalg.vector_norm(batch.edge_vectors(), dim=1)
    edge = int(torch.nonzero((centre == 0) & (r > model.min_radius + 0.2) & (r < model.cutoff - 0.2))[0])
    crossing = float((r[edge] - model.min_radius) / (model.cutoff - model.min_radius))  # atom 0's radius meets r[edge]
    base = torch.full((len(frame),), 0.5, dtype=torch.float64)
    for s0 in (0.3, crossing):
        changes = []
        for delta in (1e-3, 1e-4):
            low, high = base.clone(), base.clone()
            low[0], high[0] = s0 - delta, s0 + delta
            changes.append(float((forces_at(model, batch, high) - forces_at(model, batch, low)).abs().max()))
        assert changes[0] > 0  # the scale matters
        assert changes[1] < 0.2 * changes[0]  # shrinks with delta: no jump


def test_energy_is_twice_differentiable_in_the_scales():
    model = make_model(features=8)
    frame = water_ion_frame(3, 1, 7.0, seed=4, periodic=False)
    batch = AtomsBatch.from_frame(frame, model.cutoff, dtype=torch.float64)
    scales = torch.linspace(0.1, 0.9, len(frame), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda s: model.energies_at(batch, s)[0].sum(), (scales,))


def test_scale_zero_closes_the_coulomb_gate_and_scale_one_opens_it():
    model = make_model()
    frame = water_ion_frame(4, 1, 7.0, seed=2, periodic=False)
    batch = AtomsBatch.from_frame(frame, model.cutoff, dtype=torch.float64)
    n = len(frame)
    zeros, ones = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    with torch.no_grad():
        local_0, features_0 = model.energies_at(batch, zeros)
        total_1, features_1 = model.energies_at(batch, ones)
        species_index = model.species_index(batch.numbers)
        local_1 = model.scaled_energies(model.readout(features_1).squeeze(1), species_index, batch)
        q = model.charges(features_1, batch)
        phi = model.electrostatics(q, batch, batch.edge_vectors())
    assert torch.allclose(total_1, local_1 + q * phi, atol=1e-12)
    assert float((q * phi).abs().sum()) > 1e-4
    # at s = 0 only edges within min_radius count: a list cut there gives the same energies
    short = AtomsBatch.from_frame(frame, model.min_radius, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(model.energies_at(short, zeros)[0], local_0, atol=1e-12)


def test_router_receives_gradient_through_the_force_loss():
    model = randomise_router(make_model(scale_mode="router")).train()
    frame = water_ion_frame(6, 1, 8.5, seed=3)
    out = model(AtomsBatch.from_frame(frame, model.cutoff, dtype=torch.float64))
    loss = (out["forces"] ** 2).mean()
    loss.backward()
    gradients = [p.grad for p in model.router.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)
    assert sum(float(g.abs().sum()) for g in gradients) > 0


def test_router_starts_at_the_fixed_scale_for_every_atom():
    model = make_model(scale_mode="router", fixed_scale=0.8)
    batch = AtomsBatch.from_frame(water_ion_frame(6, 1, 8.5, seed=3), model.cutoff, dtype=torch.float64)
    assert torch.allclose(model.atom_scales(batch), torch.full((len(batch.numbers),), 0.8, dtype=torch.float64), atol=1e-3)


def test_random_training_scales_cover_the_axis_and_every_pattern():
    model = make_model().train()
    frames = [water_ion_frame(4, 1, 8.5, seed=k) for k in range(40)]
    batch = AtomsBatch.from_frames(frames, model.cutoff, dtype=torch.float64)
    torch.manual_seed(0)
    scales = model.atom_scales(batch)
    assert float(scales.min()) >= 0.0 and float(scales.max()) <= 1.0
    per_frame = [scales[batch.frame_index == f] for f in range(len(frames))]
    constant = [bool((s == s[0]).all()) for s in per_frame]
    assert any(constant) and not all(constant)  # per-frame and per-atom patterns both occur
    assert any(bool((s == 0).all()) for s in per_frame) and any(bool((s == 1).all()) for s in per_frame)
    model.eval()
    assert torch.equal(model.atom_scales(batch), torch.full_like(scales, model.fixed_scale))


def test_at_scale_restores_the_mode_and_config_rebuilds_the_model():
    model = make_model(scale_mode="router")
    with model.at_scale(0.25):
        assert model.scale_mode == "fixed" and model.fixed_scale == 0.25
    assert model.scale_mode == "router"
    rebuilt = build_model(model.config()).double()
    rebuilt.load_state_dict(model.state_dict())
    batch = AtomsBatch.from_frame(water_ion_frame(4, 1, 8.5, seed=5), model.cutoff, dtype=torch.float64)
    assert torch.allclose(rebuilt.eval()(batch)["forces"], model(batch)["forces"], atol=1e-12)


@pytest.mark.parametrize(
    "settings", [dict(min_radius=5.0), dict(min_radius=1.0, interaction_cutoff=2.0), dict(scale_mode="x"), dict(fixed_scale=1.5)]
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(AdaScaleError):
        make_model(**settings)


def test_router_radii_beyond_the_cutoff_are_refused():
    with pytest.raises(AdaScaleError, match="router_radii"):
        make_model(router_radii=(3.0, 5.0))
    assert np.isfinite(make_model().router_spec.cutoff)
