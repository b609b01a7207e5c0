"""Fitting the mixture's router with frozen branches, and its report of both deployment modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.frames import read_frames, write_frames
from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model, save_model
from adascale.models.long_range import LongRangePaiNN
from adascale.scales.features import ROUTER_FEATURES_KEY
from adascale.scales.metrics import ReportContext
from adascale.scales.mixture import evaluate_frames, fit_mixture, router_weights
from adascale.scales.routers import RouterInputs
from adascale.training.mixture import MixtureSettings, build_mixture, finetune
from adascale.units import KJ_MOL_NM_PER_EV_A
from deploy.tiny_models import TINY, make_branches
from models.branch_checks import SPECIES, water_ion_frame

pytestmark = pytest.mark.integration  # trains mixtures (router and joint fine-tuning)

CONTEXT = ReportContext(n_resamples=20)
IONS = (11, 17)
SETTINGS = TINY.model_copy(update=dict(train_frames=4, valid_frames=2, finetune_frames=2, finetune_epochs=2))


@pytest.fixture(scope="module")
def frames():
    """Frames labelled by a third random model (the 'reference' the branches approximate)."""
    torch.manual_seed(7)
    teacher = LongRangePaiNN(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=10.0).double().eval()
    out = []
    for seed in range(9):
        frame = water_ion_frame(8, 2, 8.5, seed=seed, spacing_jitter=0.1)
        frame.forces = teacher(AtomsBatch.from_frame(frame, 4.0, dtype=torch.float64))["forces"].numpy()
        out.append(frame)
    return out


def test_default_router_radii_stay_within_the_branches_so_one_list_serves_all(frames):
    mixture = build_mixture(make_branches(), [0.0, 1.0], frames[0], TINY.model_copy(update=dict(feature_radii=None)), IONS)
    assert mixture.spec.radii == (2.333, 3.333, 4.0)  # fractions 7/12, 5/6, 1 of the 4 Å long-range branch
    assert mixture.cutoff == max(branch.cutoff for branch in mixture.branches) == 4.0
    wider = build_mixture(make_branches(), [0.0, 1.0], frames[0], TINY.model_copy(update=dict(feature_radii=(2.5, 5.0))), IONS)
    assert wider.spec.radii == (2.5, 5.0) and wider.cutoff == 5.0  # an explicit choice is kept


def test_evaluate_frames_gives_branch_and_mixture_forces_with_router_inputs(frames):
    mixture = build_mixture(make_branches(), [0.0, 1.0], frames[0], TINY, IONS)
    predictions, mixed = evaluate_frames(mixture, frames[:2])
    for index, frame in enumerate(frames[:2]):
        rows = predictions.frame == index
        batch = AtomsBatch.from_frame(frame, mixture.cutoff, dtype=torch.float64)
        for k, branch in enumerate(mixture.branches):
            np.testing.assert_allclose(predictions.pred[k, rows], branch(batch)["forces"].numpy(), atol=1e-10)
        np.testing.assert_allclose(mixed[rows], mixture(batch)["forces"].numpy(), atol=1e-10)
    assert predictions.extras[ROUTER_FEATURES_KEY].shape == (predictions.N, len(mixture.spec.names))
    for k, width in enumerate(mixture.latent_widths):
        assert predictions.extras[f"latent_{k}"].shape == (predictions.N, width)
    np.testing.assert_array_equal(predictions.ref, np.concatenate([f.forces for f in frames[:2]]))


def test_fit_mixture_reports_both_modes_and_keeps_the_best_epoch(frames):
    mixture, report = fit_mixture(
        make_branches(), [0.0, 1.0], frames[:4], frames[4:6], frames[6:], settings=SETTINGS, context=CONTEXT
    )
    methods = report["methods"]
    for name in (
        "fixed_s0",
        "fixed_s1",
        "best_global_s",
        "oracle_continuous",
        "router_force_mixing",
        "mixture_force_mixing",
        "mixture",
    ):
        assert set(methods[name]) >= {"all", "ions", "close_contact"}
    assert methods["mixture"]["conservative"] is True and "gain_recovered" in methods["mixture"]
    history = report["mixture"]["finetune_history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    # the kept mixture is the best validation epoch: re-measure it
    valid, mixed = evaluate_frames(mixture, frames[4:6])
    best = min(row["valid_mae"] for row in history)
    assert np.abs(mixed - valid.ref).mean() * KJ_MOL_NM_PER_EV_A == pytest.approx(best, rel=1e-3)


def test_warm_start_copies_the_soft_router_into_the_mixture(frames):
    from adascale.scales.mixture import warm_start

    mixture = build_mixture(make_branches(), [0.0, 1.0], frames[0], TINY, IONS)
    train, _ = evaluate_frames(mixture, frames[:3])
    valid, _ = evaluate_frames(mixture, frames[3:5])
    fit = warm_start(mixture, train, valid, SETTINGS.model_copy(update=dict(hidden=(8,))))
    np.testing.assert_allclose(router_weights(mixture, valid), fit.router.weights(RouterInputs.of(valid)), atol=1e-5)
    assert fit.router.config.blocks == ["geometry", "latent"]  # no branch forces: the mixture cannot read them


def test_species_weights_enter_the_finetune_loss_as_a_weighted_mean(frames):
    """One frame, one step: the epoch's training loss is the L1 force loss of the untrained mixture,
    each atom's error weighted by its species (ions x10), over the weight sum."""
    weights = {11: 10.0, 17: 10.0}
    mixture = build_mixture(make_branches(), [0.0, 1.0], frames[0], TINY, IONS)
    batch = AtomsBatch.from_frame(frames[0], mixture.cutoff, dtype=torch.float64)
    error = np.abs(mixture(batch)["forces"].detach().numpy() - frames[0].forces)  # (atoms, 3) eV/Å
    per_atom = np.array([weights.get(int(z), 1.0) for z in frames[0].numbers])
    expected = (error.sum(axis=1) * per_atom).sum() / (3 * per_atom.sum())
    settings = SETTINGS.model_copy(update=dict(finetune_epochs=1, finetune_frames=1, species_force_weights=weights))
    tuned = finetune(mixture, frames[:1], frames[4:5], settings)
    assert tuned.history[-1]["train_loss"] == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(error.mean(), rel=1e-3)  # unweighted, the loss would differ


def test_mixture_command_writes_a_loadable_mixture_and_report(tmp_path, frames):
    for name, part in (("train", frames[:3]), ("valid", frames[3:5]), ("test", frames[5:7])):
        write_frames(tmp_path / f"{name}.extxyz", part)
    for name, branch in zip(("local", "long"), make_branches()):
        save_model(tmp_path / name, branch)
    args = [
        "mixture",
        "--model",
        str(tmp_path / "local"),
        "--model",
        str(tmp_path / "long"),
        "--train",
        str(tmp_path / "train.extxyz"),
        "--valid",
        str(tmp_path / "valid.extxyz"),
        "--test",
        str(tmp_path / "test.extxyz"),
        "--out",
        str(tmp_path / "mix"),
        "--json",
        str(tmp_path / "m.json"),
        "--set",
        "train_frames=3",
        "--set",
        "valid_frames=2",
        "--set",
        "finetune_epochs=1",
        "--set",
        "finetune_frames=1",
        "--bootstrap",
        "20",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert {"router_force_mixing", "mixture"} <= set(report["methods"])
    saved = load_model(tmp_path / "mix")
    assert saved.n_branches == 2
    # the report holds the library's numbers for the same inputs and options ...
    settings = MixtureSettings(train_frames=3, valid_frames=2, finetune_epochs=1, finetune_frames=1)
    branches = [load_model(tmp_path / name) for name in ("local", "long")]
    split = [read_frames(tmp_path / f"{name}.extxyz") for name in ("train", "valid", "test")]
    _, library = fit_mixture(branches, [0.0, 1.0], *split, settings=settings, context=CONTEXT)
    assert report["counts"] == library["counts"] and report["methods"] == json.loads(json.dumps(library["methods"]))
    # ... and the mixture it saved scores the test frames at the reported conservative MAE
    test, mixed = evaluate_frames(saved, split[2])
    mae = np.abs(mixed - test.ref).mean() * KJ_MOL_NM_PER_EV_A
    # rel 1e-6, float32 round-off: torch-pme's non-persistent buffers (prefactor, smearing) are
    # rebuilt in float32 on load, while the fitted mixture's were cast from its float64 branches
    # (2e-8 relative apart); a different model would be off by far more
    assert report["methods"]["mixture"]["all"] == pytest.approx(mae, rel=1e-6)


def test_joint_mixture_trains_its_branches_and_the_global_control_keeps_one_scale(frames):
    """Joint: the branches move (frozen they would not); global weight: every atom shares one scale."""
    branches = make_branches()
    before = [p.detach().clone() for p in branches[1].parameters()]
    joint, report = fit_mixture(
        branches,
        [0.0, 1.0],
        frames[:4],
        frames[4:6],
        frames[6:],
        settings=SETTINGS.model_copy(update=dict(joint=True)),
        context=CONTEXT,
    )
    assert joint.gauge_penalty == SETTINGS.gauge_penalty
    moved = [not torch.equal(a, b) for a, b in zip(before, joint.branches[1].parameters())]
    assert any(moved) and "mixture" in report["methods"]

    control, report = fit_mixture(
        make_branches(),
        [0.0, 1.0],
        frames[:4],
        frames[4:6],
        frames[6:],
        settings=SETTINGS.model_copy(update=dict(global_weight=True)),
        context=CONTEXT,
    )
    batch = AtomsBatch.from_frame(frames[6], control.cutoff, dtype=torch.float64)
    weights = control(batch)["features"][:, :2]
    assert torch.allclose(weights, weights[:1].expand_as(weights))
    assert "router_force_mixing" not in report["methods"] and "mixture" in report["methods"]
