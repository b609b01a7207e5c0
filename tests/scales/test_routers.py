import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adascale.cli import app
from adascale.errors import AdaScaleError
from adascale.nn.smooth import anchor_weights, smooth_clamp
from adascale.predictions import PredictionSet
from adascale.scales.axis import interpolate
from adascale.scales.oracles import anchor_errors, best_global_scale, scale_loss
from adascale.scales.router_report import candidate_blocks, load_selected_router, route, save_routers
from adascale.scales.routers import Router, RouterInputs, TrainSettings, fit_router
from adascale.scales.synthetic import synthetic_predictions
from adascale.units import KJ_MOL_NM_PER_EV_A

FAST = TrainSettings(hidden=(32,), max_epochs=40, patience=40, batch_size=512, lr=1e-2)
SCALE_OF_SPECIES = {1: 0.0, 8: 0.5, 11: 1.0, 17: 1.0}


def _species_routed(n_frames: int, seed: int, n_anchors: int = 2) -> PredictionSet:
    """No label noise, and each species' best scale is fixed (H 0, O 0.5, ions 1): a router
    that reads the species can reach zero loss, one fixed scale cannot."""
    base = synthetic_predictions(n_frames, 20, n_anchors, noise=0.0, seed=seed)
    s_true = np.vectorize(SCALE_OF_SPECIES.get)(base.species).astype(float)
    return replace(base, ref=interpolate(base.pred, base.scales, s_true), extras={"s_true": s_true})


def _best_fixed_mae(fit: PredictionSet, test: PredictionSet) -> float:
    s, _ = best_global_scale(anchor_errors(fit), fit.scales)
    return float(scale_loss(anchor_errors(test), test.scales, s).mean())


def test_hard_router_learns_the_per_species_scale_exactly():
    train, valid, test = (_species_routed(n, seed) for n, seed in ((40, 1), (10, 2), (10, 3)))
    fit = fit_router("hard", train, valid, pool=[0.0, 0.5, 1.0], blocks=["species"], settings=FAST)
    inputs = RouterInputs.of(test)
    np.testing.assert_array_equal(fit.router.scales(inputs), test.extras["s_true"])
    assert fit.router.sample_loss(test).max() < 1e-12
    assert _best_fixed_mae(valid, test) > 0.05


def test_soft_router_approaches_the_per_species_mixture():
    train, valid, test = (_species_routed(n, seed) for n, seed in ((40, 1), (10, 2), (10, 3)))
    fit = fit_router("soft", train, valid, blocks=["species"], settings=FAST)
    np.testing.assert_allclose(fit.router.scales(RouterInputs.of(test)), test.extras["s_true"], atol=0.05)
    assert fit.router.sample_loss(test).mean() < 0.05 * _best_fixed_mae(valid, test)


def test_soft_router_mixes_the_anchors_with_its_weights_and_hard_uses_the_axis():
    train, valid = _species_routed(20, 1, n_anchors=3), _species_routed(5, 2, n_anchors=3)
    inputs = RouterInputs.of(valid)
    soft = fit_router("soft", train, valid, blocks=["species"], settings=replace(FAST, max_epochs=2)).router
    weights = soft.weights(inputs)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(soft.forces(inputs), np.einsum("nk,knc->nc", weights, valid.pred))
    np.testing.assert_allclose(soft.scales(inputs), weights @ valid.scales)
    hard = fit_router(
        "hard", train, valid, pool=[0.0, 0.25, 1.0], blocks=["species"], settings=replace(FAST, max_epochs=2)
    ).router
    s = hard.scales(inputs)
    assert set(np.unique(s)) <= {0.0, 0.25, 1.0}
    np.testing.assert_allclose(hard.forces(inputs), interpolate(valid.pred, valid.scales, s))


@pytest.mark.parametrize("scales", [[0.0, 1.0], [0.0, 0.3, 1.0], [0.0, 0.25, 0.5, 1.0]])
def test_anchor_weights_are_the_axis_interpolation(scales):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(len(scales), 200, 3))
    u = np.concatenate([rng.uniform(0, 1, 197), [0.0, 1.0, scales[1]]])
    weights = anchor_weights(torch.tensor(u), torch.tensor(scales, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(np.einsum("nk,knc->nc", weights, values), interpolate(values, np.array(scales), u), atol=1e-12)
    # outside [0, 1]: clamped when deployed, continued linearly by the training surrogate
    outside = torch.tensor([-0.5, 1.5], dtype=torch.float64)
    np.testing.assert_allclose(
        anchor_weights(outside, torch.tensor(scales, dtype=torch.float64)).numpy()[:, [0, -1]], [[1, 0], [0, 1]]
    )
    extrapolated = anchor_weights(outside, torch.tensor(scales, dtype=torch.float64), extrapolate=True).numpy()
    first, last = scales[1] - scales[0], scales[-1] - scales[-2]
    np.testing.assert_allclose(extrapolated[0, :2], [1 + 0.5 / first, -0.5 / first])
    np.testing.assert_allclose(extrapolated[1, -2:], [-0.5 / last, 1 + 0.5 / last])


def test_smooth_clamp_is_the_clamp_away_from_its_rounded_corners_and_twice_differentiable():
    delta = 0.1
    x = torch.linspace(-0.5, 1.5, 2001, dtype=torch.float64, requires_grad=True)
    y = smooth_clamp(x, delta)
    far = ((x < -delta) | ((x > delta) & (x < 1 - delta)) | (x > 1 + delta)).detach()
    torch.testing.assert_close(y[far], x.clamp(0, 1)[far])
    assert ((y >= 0) & (y <= 1)).all() and (torch.diff(y) >= 0).all()
    (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    h = float(x[1].detach() - x[0].detach())
    assert torch.diff(first).abs().max() < 3 * h / delta  # no jump in the slope
    assert torch.diff(second).abs().max() < 1.0  # no jump in the curvature either (C2)


def test_learned_routers_beat_the_best_fixed_scale_on_regime_dependent_data():
    """Synthetic data whose best scale follows species and nearest-ion distance (as on NaCl)."""
    train, valid, test = (synthetic_predictions(n, 25, seed=seed) for n, seed in ((80, 1), (20, 2), (20, 3)))
    fixed = _best_fixed_mae(valid, test)
    is_ion = np.isin(test.species, (11, 17))
    reach = np.clip(1.2 - test.d_ion, 0.0, 1.0)
    ideal = scale_loss(anchor_errors(test), test.scales, np.where(is_ion, reach, 0.4 * reach)).mean()  # knows the rule
    soft = fit_router("soft", train, valid, settings=FAST).router.sample_loss(test).mean()
    hard = fit_router("hard", train, valid, pool=np.linspace(0, 1, 5), settings=FAST).router.sample_loss(test).mean()
    assert soft < fixed - 0.8 * (fixed - ideal)
    assert hard < fixed - 0.5 * (fixed - ideal)


def test_routers_never_read_the_labels():
    train, valid = _species_routed(20, 1), _species_routed(5, 2)
    router = fit_router("soft", train, valid, settings=replace(FAST, max_epochs=3)).router
    scrambled = replace(valid, ref=np.random.default_rng(0).normal(size=valid.ref.shape))
    np.testing.assert_array_equal(router.forces(RouterInputs.of(valid)), router.forces(RouterInputs.of(scrambled)))
    assert not hasattr(RouterInputs.of(valid), "ref")


def test_router_refuses_inputs_it_was_not_trained_on():
    train, valid = _species_routed(20, 1), _species_routed(5, 2)
    for predictions in (train, valid):  # as `adascale predict` stores them: per-branch latents
        predictions.extras.update(
            router_features=np.ones((predictions.N, 3)),
            latent_0=np.ones((predictions.N, 4)),
            latent_1=np.ones((predictions.N, 2)),
        )
    router = fit_router("soft", train, valid, settings=replace(FAST, max_epochs=1)).router
    assert router.config.blocks == ["geometry", "forces", "latent"] and router.config.n_inputs == 3 + 3 + 4 + 2
    unlabelled = RouterInputs(valid.pred, valid.species, valid.d_ion)
    with pytest.raises(AdaScaleError, match="router_features"):
        router.forces(unlabelled)
    with pytest.raises(AdaScaleError, match="latent_1"):
        router.forces(replace(unlabelled, extras={"router_features": np.ones((valid.N, 3)), "latent_0": np.ones((valid.N, 4))}))
    with pytest.raises(AdaScaleError, match="expects 2 branches"):
        router.forces(replace(RouterInputs.of(valid), pred=np.concatenate([valid.pred, valid.pred[:1]])))
    with pytest.raises(AdaScaleError, match="unknown router feature block"):
        fit_router("soft", train, valid, blocks=["charges"], settings=FAST)


def test_save_and_load_round_trip_and_reject_corrupt_files(tmp_path):
    train, valid = _species_routed(20, 1), _species_routed(5, 2)
    router = fit_router("hard", train, valid, pool=[0.0, 0.5, 1.0], settings=replace(FAST, max_epochs=2)).router
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    np.testing.assert_array_equal(loaded.forces(RouterInputs.of(valid)), router.forces(RouterInputs.of(valid)))
    assert loaded.config == router.config

    torch.save({"payload": Router}, tmp_path / "r" / "weights.pt")  # a pickled class: weights_only must refuse it
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        Router.load(tmp_path / "r")
    (tmp_path / "r" / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        Router.load(tmp_path / "r")
    with pytest.raises(AdaScaleError, match="not a model directory"):
        Router.load(tmp_path / "nothing")


def test_route_reports_routers_fitted_without_the_test_set(tmp_path):
    train, valid, test = (synthetic_predictions(n, 20, seed=seed) for n, seed in ((30, 1), (10, 2), (10, 3)))
    settings = replace(FAST, max_epochs=5)
    report, fits, selected = route(train, valid, test, settings=settings, n_resamples=50)
    methods = report["methods"]
    for name in (
        "fixed_s0",
        "fixed_s1",
        "best_global_s",
        "oracle_hard",
        "oracle_continuous",
        "oracle_pool",
        "router_hard",
        "router_soft",
        "router",
    ):
        assert set(methods[name]) >= {"all", "ions", "close_contact"}
    assert selected == min(fits, key=lambda kind: fits[kind].valid_mae) == methods["router"]["selected"]
    assert methods["router"]["all"] == methods[f"router_{selected}"]["all"]
    assert methods["oracle_pool"]["pool"] == methods["router_hard"]["pool"] == report["routing"]["pool"]
    for name in ("router_hard", "router_soft"):
        entry = methods[name]
        lo, hi = entry["ci"]["all"]
        assert lo <= entry["all"] <= hi
        fixed = min(methods["fixed_s0"]["all"], methods["fixed_s1"]["all"])
        expected = (fixed - entry["all"]) / (fixed - methods["oracle_continuous"]["all"])
        assert entry["gain_recovered"]["all"] == pytest.approx(expected)

    other_test = replace(test, ref=test.ref + 1.0)  # other test labels: the same routers must come out
    _, fits_again, _ = route(train, valid, other_test, settings=settings, n_resamples=50)
    for kind in fits:
        assert fits_again[kind].valid_mae == fits[kind].valid_mae

    save_routers(tmp_path / "routers", fits, selected)
    loaded = load_selected_router(tmp_path / "routers")
    np.testing.assert_array_equal(loaded.forces(RouterInputs.of(test)), fits[selected].router.forces(RouterInputs.of(test)))


@pytest.mark.integration  # the route verb end to end: trains hard and soft routers
def test_route_command_writes_the_report_and_routers(tmp_path):
    for name, (n, seed) in {"train": (20, 1), "valid": (8, 2), "test": (8, 3)}.items():
        synthetic_predictions(n, 20, seed=seed).save(tmp_path / f"{name}.npz")
    paths = [str(tmp_path / f"{name}.npz") for name in ("train", "valid", "test")]
    args = [
        "route",
        *paths,
        "--json",
        str(tmp_path / "r.json"),
        "--out",
        str(tmp_path / "routers"),
        "--max-epochs",
        "3",
        "--bootstrap",
        "20",
        "--pool",
        "0,0.5,1",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "router_soft" in result.output and "selected on validation" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["units"] == "kJ/mol/nm" and report["methods"]["router_hard"]["pool"] == [0.0, 0.5, 1.0]
    assert (tmp_path / "routers" / "hard" / "model.json").is_file()
    # the report is the library's for the same inputs and options, number for number
    sets = [PredictionSet.load(path) for path in paths]
    library, _, selected = route(
        *sets, pool=[0.0, 0.5, 1.0], settings=TrainSettings(max_epochs=3, seed=0), n_resamples=20, seed=0
    )
    assert report == json.loads(json.dumps(library)) and report["routing"]["selected"] == selected
    # and the selected router it saved scores the test set at the reported MAE
    test = sets[2]
    loss = load_selected_router(tmp_path / "routers").sample_loss(test) * KJ_MOL_NM_PER_EV_A
    assert report["methods"]["router"]["all"] == pytest.approx(loss.mean(), rel=1e-12)
    assert report["methods"][f"router_{selected}"]["ions"] == pytest.approx(
        loss[np.isin(test.species, [11, 17])].mean(), rel=1e-12
    )

    bad = subprocess.run(
        [sys.executable, "-c", "from adascale.cli import main; main()", *args, "--frames", "one.extxyz"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --frames")


def test_route_tries_the_features_with_and_without_branch_latents():
    train, valid, test = (synthetic_predictions(n, 20, seed=seed) for n, seed in ((20, 1), (8, 2), (8, 3)))
    for predictions in (train, valid, test):
        predictions.extras.update(
            latent_0=np.random.default_rng(0).normal(size=(predictions.N, 3)), latent_1=np.zeros((predictions.N, 2))
        )
    assert candidate_blocks(RouterInputs.of(train)) == [["species", "d_ion", "forces", "latent"], ["species", "d_ion", "forces"]]
    report, fits, _ = route(train, valid, test, pool=[0.0, 0.5, 1.0], settings=replace(FAST, max_epochs=2), n_resamples=20)
    tried = report["routing"]["candidates"]
    assert len(tried) == 4
    for kind, fit in fits.items():
        assert fit.valid_mae * KJ_MOL_NM_PER_EV_A == pytest.approx(min(t["valid_mae"] for t in tried if t["kind"] == kind))
        assert report["routing"]["feature_blocks"][kind] == fit.router.config.blocks
