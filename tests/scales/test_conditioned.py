"""Scale analysis of a scale-conditioned model: grid anchors are the model's own forces at those scales."""

from __future__ import annotations

import numpy as np
import torch

from adascale.models.batch import AtomsBatch
from adascale.scales.conditioned import analyze_conditioned, grid_predictions
from adascale.scales.metrics import ReportContext
from adascale.units import KJ_MOL_NM_PER_EV_A
from models.branch_checks import water_ion_frame
from models.test_scale_conditioned import make_model, randomise_router


def labelled_frames(model, seeds, scale=0.6):
    """Frames labelled by the model itself at one scale plus noise: the best fixed scale is near ``scale``."""
    frames = []
    for seed in seeds:
        frame = water_ion_frame(6, 1, 8.5, seed=seed)
        with model.at_scale(scale):
            forces = model(AtomsBatch.from_frame(frame, model.cutoff, dtype=torch.float64))["forces"].numpy()
        frame.forces = forces + np.random.default_rng(seed).normal(0, 0.01, forces.shape)
        frames.append(frame)
    return frames


def test_grid_anchors_are_the_model_at_each_scale():
    model = make_model(scale_mode="router")
    frames = labelled_frames(model, [1, 2])
    predictions = grid_predictions(model, frames, (0.0, 0.5, 1.0))
    np.testing.assert_array_equal(predictions.scales, [0.0, 0.5, 1.0])
    with model.at_scale(0.5):
        direct = model(AtomsBatch.from_frames(frames, model.cutoff, dtype=torch.float64))["forces"].numpy()
    np.testing.assert_allclose(predictions.pred[1], direct, atol=1e-10)


def test_report_holds_fixed_scales_oracles_refinement_and_the_router():
    model = randomise_router(make_model(scale_mode="router"))
    valid, test = labelled_frames(model, [1, 2]), labelled_frames(model, [3, 4])
    report = analyze_conditioned(model, valid, test, context=ReportContext(n_resamples=20))
    methods = report["methods"]
    assert {"fixed_s0", "fixed_s0.5", "fixed_s1", "best_global_s", "oracle_continuous", "oracle_pool_refined", "router"} <= set(
        methods
    )
    assert abs(methods["best_global_s"]["s"] - 0.6) < 0.13  # the labels were made at s = 0.6
    assert methods["oracle_continuous"]["all"] <= methods["best_global_s"]["all"] + 1e-9
    assert report["refinement"]["initial"] == [0.0, 1.0]
    ref = np.concatenate([f.forces for f in test])
    with torch.no_grad():
        routed = model(AtomsBatch.from_frames(test, model.cutoff, dtype=torch.float64))["forces"].numpy()
    expected = np.abs(routed - ref).mean() * KJ_MOL_NM_PER_EV_A
    assert abs(methods["router"]["all"] - expected) < 1e-6 * expected
    assert (
        0.0
        <= report["scale_distribution"]["all"]["quantiles"]["0.05"]
        <= report["scale_distribution"]["all"]["quantiles"]["0.95"]
        <= 1.0
    )
