"""The conservative mixture: a branch like any other (shared checks), E = sum w e, safe save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read

from adascale.data.frames import Frame, read_frames, write_frames
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model, save_model
from adascale.models.mixture import AdaptiveMixture
from deploy.tiny_models import TINY, make_mixture
from models.branch_checks import BranchChecks, water_ion_frame


class TestMixtureBranchChecks(BranchChecks):
    """Forces = -dE/dR by finite differences, symmetry, batching, smoothness at the cutoff."""

    separable = False  # the long-range branch interacts beyond its cutoff

    def make_branch(self):
        return make_mixture()


def _default_radii_mixture() -> AdaptiveMixture:
    """A mixture at the default router radii (here 2.33, 3.33, 4 Å: within the 4 Å branch, so one list
    serves it), its router's last layer scaled down so that nearly every atom mixes both branches
    and the router's own gradient is in nearly every force."""
    mixture = make_mixture(settings=TINY.model_copy(update={"feature_radii": None}))
    with torch.no_grad():
        last = mixture.router.mlp[-1]
        last.weight.mul_(0.03)
        last.bias.fill_(0.5)
    return mixture


class TestDefaultRadiiMixtureBranchChecks(BranchChecks):
    """The same checks for a mixture with the default router radii."""

    separable = False

    def make_branch(self):
        return _default_radii_mixture()


def test_default_radii_mixture_mixes_nearly_every_atom(periodic_frame):
    mixture = _default_radii_mixture()
    assert mixture.spec.cutoff == mixture.cutoff == 4.0
    weights = mixture.weights(mixture.components(_batch(mixture, periodic_frame))[1]).detach()[:, 0]
    assert float(((weights > 0.01) & (weights < 0.99)).double().mean()) > 0.9


def _batch(mixture, frame):
    return AtomsBatch.from_frame(frame, mixture.cutoff, dtype=torch.float64)


def test_energy_is_the_router_weighted_sum_of_branch_atom_energies(mixture, periodic_frame):
    batch = _batch(mixture, periodic_frame)
    out = mixture(batch)
    energies, inputs = mixture.components(batch)
    for k, branch in enumerate(mixture.branches):
        alone = branch(batch)["atom_energy"]
        torch.testing.assert_close(energies[:, k].detach(), alone)
    w = mixture.weights(inputs).detach()
    offsets = mixture.energy_offsets.detach().T[mixture.species_index(batch.numbers)]
    assert torch.allclose(w.sum(dim=1), torch.ones(len(w), dtype=w.dtype))
    assert 0.05 < float(w[:, 0].std())  # weights really vary from atom to atom
    torch.testing.assert_close(out["energy"].sum(), (w * (energies.detach() + offsets)).sum())


def test_forces_include_the_routers_own_gradient(mixture, periodic_frame):
    """Mixing the branches' atom-energy gradients with frozen weights is not the mixture's force:
    the difference is the router term sum_i sum_k e_ik dw_ik/dR that makes it conservative."""
    batch = _batch(mixture, periodic_frame)
    forces = mixture(batch)["forces"]
    positions = batch.positions.clone().requires_grad_(True)
    energies, inputs = mixture.components(batch.with_positions(positions))
    frozen = mixture.weights(inputs).detach()
    offsets = mixture.energy_offsets.detach().T[mixture.species_index(batch.numbers)]
    (gradient,) = torch.autograd.grad((frozen * (energies + offsets)).sum(), positions)
    assert (forces + gradient).abs().max() > 1e-2


def test_one_hot_router_reproduces_a_single_branch(periodic_frame):
    mixture = make_mixture()
    last = mixture.router.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.0)  # scale 3 clamps to s = 1: all weight on the long-range branch
        mixture.energy_offsets.zero_()
    batch = _batch(mixture, periodic_frame)
    alone = mixture.branches[1](batch)
    mixed = mixture(batch)
    torch.testing.assert_close(mixed["forces"], alone["forces"], atol=1e-10, rtol=0)
    torch.testing.assert_close(mixed["energy"], alone["energy"], atol=1e-10, rtol=0)


def test_save_and_load_round_trip_safely(tmp_path, mixture, periodic_frame):
    save_model(tmp_path / "mix", mixture, {"note": "test"})
    loaded = load_model(tmp_path / "mix")
    assert isinstance(loaded, AdaptiveMixture) and loaded.config() == mixture.config()
    batch = _batch(mixture, periodic_frame)
    torch.testing.assert_close(loaded(batch)["forces"], mixture(batch)["forces"])

    torch.save({"payload": AdaptiveMixture}, tmp_path / "mix" / "weights.pt")  # pickled code: refused
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        load_model(tmp_path / "mix")
    (tmp_path / "mix" / "model.json").write_text("{not json")
    with pytest.raises(AdaScaleError, match="corrupt model file"):
        load_model(tmp_path / "mix")
    with pytest.raises(AdaScaleError, match="not a model directory"):
        load_model(tmp_path / "elsewhere")


def test_mixture_on_unlabelled_frames_gives_exactly_its_output_on_the_labelled_ones(tmp_path, mixture):
    """Labels never enter a prediction: the same frames with and without reference forces and
    energies, read back from files, give bit-identical energies and forces, in the model and
    through the ASE calculator."""
    labelled = [water_ion_frame(6, 1, 8.5, seed=s) for s in (4, 5)]
    write_frames(tmp_path / "labelled.extxyz", labelled)
    write_frames(tmp_path / "bare.extxyz", [Frame(f.numbers, f.positions, f.cell, f.pbc, None, None) for f in labelled])
    with_labels = read_frames(tmp_path / "labelled.extxyz")
    bare = read_frames(tmp_path / "bare.extxyz", require_forces=False)
    assert all(f.forces is not None for f in with_labels) and all(f.forces is None and f.energy is None for f in bare)
    for a, b in zip(with_labels, bare):
        out_a, out_b = mixture(_batch(mixture, a)), mixture(_batch(mixture, b))
        assert torch.equal(out_a["energy"], out_b["energy"]) and torch.equal(out_a["forces"], out_b["forces"])
        assert torch.isfinite(out_a["forces"]).all() and out_a["forces"].abs().max() > 1e-3
    atoms = [read(tmp_path / name, index=1) for name in ("labelled.extxyz", "bare.extxyz")]
    for each in atoms:
        each.calc = AdaScaleCalculator(mixture, dtype="float64")
    assert atoms[0].get_potential_energy() == atoms[1].get_potential_energy()
    np.testing.assert_array_equal(atoms[0].get_forces(), atoms[1].get_forces())
    np.testing.assert_allclose(atoms[1].get_forces(), mixture(_batch(mixture, bare[1]))["forces"].numpy(), rtol=0, atol=1e-12)


def test_a_mixture_needs_matching_branches_and_scales(mixture):
    with pytest.raises(AdaScaleError, match="K >= 2"):
        AdaptiveMixture(list(mixture.branches)[:1], [0.0], mixture.spec, [8])


def test_gauge_penalty_is_the_weighted_energy_disagreement_and_vanishes_when_branches_agree(periodic_frame):
    mixture = make_mixture()
    mixture.gauge_penalty = 2.0
    batch = _batch(mixture, periodic_frame)
    out = mixture(batch)
    energies, inputs = mixture.components(batch)
    w = mixture.weights(inputs).detach()
    e = mixture.aligned(energies, batch.numbers).detach()
    brute = sum(w[i, 0] * w[i, 1] * (e[i, 0] - e[i, 1]) ** 2 for i in range(len(w))) / len(w)
    torch.testing.assert_close(mixture.auxiliary_loss(out, batch).detach(), 2.0 * brute)
    agreeing = dict(out, features=torch.cat([w, e[:, :1].expand(-1, 2)], dim=1))
    assert float(mixture.auxiliary_loss(agreeing, batch)) == 0.0


def test_global_weight_mixture_gives_every_atom_the_same_weights(periodic_frame):
    torch.manual_seed(0)
    template = make_mixture()
    mixture = AdaptiveMixture(
        list(template.branches), template.scales, template.spec, template.latent_widths, global_weight=True
    ).double()
    with torch.no_grad():
        mixture.global_scale.fill_(0.3)
    batch = _batch(mixture, periodic_frame)
    w = mixture(batch)["features"][:, :2]
    torch.testing.assert_close(w, torch.tensor([[0.7, 0.3]], dtype=torch.float64).expand(len(w), 2))
    assert not hasattr(mixture, "router") and "global_scale" in dict(mixture.named_parameters())
