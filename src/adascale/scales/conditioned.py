"""The scale analysis of a scale-conditioned model: the model itself evaluated at candidate scales.

A scale-conditioned model (:class:`adascale.models.scale_conditioned.ScaleConditionedPaiNN`)
needs no second model to interpolate with: evaluated with every atom at each scale of a grid
it gives a PredictionSet whose anchors are those scales. On it, the analysis of
:mod:`adascale.scales.analysis` applies unchanged: every grid scale as a fixed scale,
``best_global_s`` fitted on validation, the hard / pool / continuous oracles (the continuous
oracle interpolates linearly between adjacent grid scales, a fine approximation of the model
between them), and loss-guided refinement from {0, 1}, whose candidate midpoints are grid
scales (1/8 steps: three refinement levels are the model's own forces, none interpolated).
The model's learned router, which needs no labels, is reported beside them as ``router``,
with the distribution of the scales it assigns per species.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adascale.data.frames import Frame
from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.models.inference import module_forces, predict, scale_grid_forces
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze, refine
from adascale.scales.metrics import ReportContext
from adascale.scales.router_report import add_methods

GRID: tuple[float, ...] = tuple(k / 8 for k in range(9))
SCALE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def grid_predictions(
    model,
    frames: Sequence[Frame],
    grid: Sequence[float] = GRID,
    *,
    path: object = None,
    ion_species: Sequence[int] = DEFAULT_ION_SPECIES,
) -> PredictionSet:
    """The model at each grid scale as the anchors of a PredictionSet (scales = ``grid``)."""
    outputs = scale_grid_forces(model, frames, grid, path=path)
    for output in outputs:
        output.latent = None  # the trunk's latents at nine scales are not needed downstream
    predictions = predict(
        frames, outputs, path=path, metadata={"data": str(path), "model": model.kind, "ion_species": list(ion_species)}
    )
    predictions.scales = np.asarray(grid, dtype=float)
    return predictions


def routed_forces(model, frames: Sequence[Frame], *, path: object = None) -> tuple[np.ndarray, np.ndarray]:
    """Forces (N, 3) eV/Å and per-atom scales (N,) of the model with its own router (no labels read)."""
    previous = model.scale_mode
    model.scale_mode = "router"
    try:
        output = module_forces(model, frames, name="router", path=path)
    finally:
        model.scale_mode = previous
    return np.concatenate(output.forces), np.concatenate(output.latent)[:, -1].astype(float)


def scale_distribution(scales: np.ndarray, species: np.ndarray) -> dict:
    """Quantiles of the routed scales for all atoms and per species (atomic number keys)."""
    groups = {"all": np.ones(len(scales), bool)} | {str(int(z)): species == z for z in np.unique(species)}
    return {
        name: {
            "mean": float(scales[mask].mean()),
            "quantiles": dict(zip(map(str, SCALE_QUANTILES), np.quantile(scales[mask], SCALE_QUANTILES).tolist())),
        }
        for name, mask in groups.items()
    }


def analyze_conditioned(
    model,
    valid_frames: Sequence[Frame],
    test_frames: Sequence[Frame],
    *,
    grid: Sequence[float] = GRID,
    with_router: bool = True,
    context: ReportContext = ReportContext(),
    max_size: int = 9,
    tol: float = 1e-3,
    paths: tuple[object, object] = (None, None),
) -> dict:
    """The scale report of a scale-conditioned model: fitted on ``valid_frames``, reported on ``test_frames``.

    Returns the :func:`analyze` report (methods fixed_s*, best_global_s, oracle_*), its
    ``refinement`` from {0, 1}, and with ``with_router`` the method ``router`` and
    ``scale_distribution`` of the routed scales.
    """
    units, n_resamples = context.units, context.n_resamples
    valid = grid_predictions(model, valid_frames, grid, path=paths[0], ion_species=context.ion_species)
    test = grid_predictions(model, test_frames, grid, path=paths[1], ion_species=context.ion_species)
    report = analyze(test, fit=valid, fit_label="validation set", units=units, n_resamples=n_resamples)
    refined = refine(
        test,
        fit=valid,
        fit_label="validation set",
        init=[0.0, 1.0],
        max_size=max_size,
        tol=tol,
        units=units,
        n_resamples=n_resamples,
    )
    report["refinement"] = refined["refinement"]
    report["methods"]["oracle_pool_refined"] = refined["methods"]["oracle_pool"]
    if with_router:
        forces, scales = routed_forces(model, test_frames, path=paths[1])
        add_methods(report, test, {"router": np.abs(forces - test.ref).mean(axis=1)}, n_resamples=n_resamples)
        report["scale_distribution"] = scale_distribution(scales, test.species)
    return report
