"""``adascale route``: fit learned routers on training predictions, select on validation,
report on test, beside the fixed scales and the oracles (the report JSON: units, counts, methods).

Nothing is fitted on the test set: the routers and the refined pool are fitted on train,
the router kind (hard or soft) and ``best_global_s`` are chosen on validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from adascale.data.regimes import SUBSETS
from adascale.errors import AdaScaleError
from adascale.files import write_json
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze, check_same_anchors
from adascale.scales.axis import as_pool
from adascale.scales.methods import BEST_GLOBAL_S, ORACLE_CONTINUOUS, ROUTER, fixed_methods, router_name
from adascale.scales.metrics import DEFAULT_RESAMPLES, FrameBootstrap, gain_recovered, method_entry
from adascale.scales.oracles import ScaleLosses, anchor_errors
from adascale.scales.refine import refine_pool
from adascale.scales.routers import KINDS, FitResult, Router, RouterInputs, TrainSettings, fit_router
from adascale.units import force_unit_factor

SELECTION_FILE = "selected.json"


def refined_pool(train: PredictionSet, *, max_size: int = 9, tol: float = 1e-3) -> np.ndarray:
    """The loss-guided pool refined on the training set from the anchors (``adascale refine``'s defaults)."""
    losses = ScaleLosses(anchor_errors(train), train.scales)
    return refine_pool(losses, train.scales, max_size=max_size, tol=tol)[-1].pool


def route(
    train: PredictionSet,
    valid: PredictionSet,
    test: PredictionSet,
    *,
    pool: Sequence[float] | None = None,
    blocks: Sequence[str] | None = None,
    settings: TrainSettings = TrainSettings(),
    units: str = "kJ/mol/nm",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    on_epoch: Callable[[str, dict], None] | None = None,  # (which router and features, history row)
) -> tuple[dict, dict[str, FitResult], str]:
    """Fit a hard and a soft router; return (report, {kind: fit}, the kind selected on validation).

    Without ``blocks``, each kind is fitted on the default features
    (:meth:`RouterInputs.default_blocks`) and, when branch latents are stored, also without
    them (hundreds of latent columns can overfit a small training set); validation picks.
    The report is :func:`adascale.scales.analysis.analyze` of ``test`` (fixed scales,
    ``best_global_s`` fitted on ``valid``, oracles, ``oracle_pool`` on the router's pool) plus
    ``router_hard``, ``router_soft`` and ``router`` (the better on validation), each with
    ``gain_recovered`` per subset against the best fixed anchor (as every method of the
    report) and ``gain_recovered_vs_best_global_s`` against the validation-fitted best scale.
    """
    check_same_anchors(valid, train, "training set")
    check_same_anchors(test, train, "training set")
    pool_source = "given" if pool is not None else "refined on the training set from the anchors"
    pool = as_pool(pool) if pool is not None else refined_pool(train)
    candidates = [list(blocks)] if blocks is not None else candidate_blocks(RouterInputs.of(train))
    tried, fits = [], {}
    for kind in KINDS:
        for option in candidates:
            fit = fit_router(
                kind,
                train,
                valid,
                pool=pool,
                blocks=option,
                settings=settings,
                on_epoch=None if on_epoch is None else (lambda row, label=f"{kind} ({', '.join(option)})": on_epoch(label, row)),
            )
            tried.append({"kind": kind, "blocks": option, "valid_mae": fit.valid_mae * force_unit_factor(units)})
            if kind not in fits or fit.valid_mae < fits[kind].valid_mae:
                fits[kind] = fit
    selected = min(KINDS, key=lambda kind: fits[kind].valid_mae)

    report = analyze(test, fit=valid, fit_label="validation set", pool=pool, units=units, n_resamples=n_resamples, seed=seed)
    factor = force_unit_factor(units)
    masks = test.masks()
    bootstrap = FrameBootstrap(test.frame, masks, n_resamples=n_resamples, seed=seed)
    methods = report["methods"]
    for kind, fit in fits.items():
        methods[router_name(kind)] = method_entry(
            fit.router.sample_loss(test),
            masks,
            bootstrap=bootstrap,
            factor=factor,
            valid_mae=fit.valid_mae * factor,
            **({"pool": pool.tolist()} if kind == "hard" else {}),
        )
    methods[ROUTER] = {**methods[router_name(selected)], "selected": selected}
    add_gains(methods, [*(router_name(kind) for kind in fits), ROUTER])
    report["routing"] = {
        "selected": selected,
        "selected_on": "validation MAE (all atoms)",
        "pool": pool.tolist(),
        "pool_source": pool_source,
        "feature_blocks": {kind: fit.router.config.blocks for kind, fit in fits.items()},
        "candidates": tried,
        "training": {**asdict(settings), "epochs": {kind: len(fit.history) for kind, fit in fits.items()}},
        "fitted_on": {"routers": "training set", "selection and best_global_s": "validation set", "reported_on": "test set"},
    }
    return report, fits, selected


def candidate_blocks(inputs: RouterInputs) -> list[list[str]]:
    """The default feature blocks, and the same without branch latents when they are there."""
    blocks = inputs.default_blocks()
    return [blocks] + ([[block for block in blocks if block != "latent"]] if "latent" in blocks else [])


def add_methods(
    report: dict, predictions: PredictionSet, losses: dict[str, np.ndarray], *, n_resamples: int, seed: int = 0
) -> None:
    """Add one ``methods`` entry per per-sample loss (N,) eV/Å on ``predictions`` (MAE per subset
    in the report's units, frame-bootstrap intervals), each with its gains (:func:`add_gains`)."""
    masks, factor = predictions.masks(), force_unit_factor(report["units"])
    bootstrap = FrameBootstrap(predictions.frame, masks, n_resamples=n_resamples, seed=seed)
    for name, loss in losses.items():
        report["methods"][name] = method_entry(loss, masks, bootstrap=bootstrap, factor=factor)
    add_gains(report["methods"], list(losses))


def add_gains(methods: dict, names: Sequence[str]) -> None:
    """Give each named method ``gain_recovered`` per subset against the best fixed anchor (as
    analyze does for every method) and ``gain_recovered_vs_best_global_s`` against the
    validation-fitted best single scale; both relative to ``oracle_continuous``."""
    fixed = fixed_methods(methods)
    oracle = methods[ORACLE_CONTINUOUS]
    for name in names:
        entry = methods[name]
        entry["gain_recovered"], entry["gain_recovered_vs_best_global_s"] = {}, {}
        for subset in SUBSETS:
            anchors = [methods[f][subset] for f in fixed if methods[f][subset] is not None]
            best_anchor = min(anchors) if anchors else None
            entry["gain_recovered"][subset] = gain_recovered(best_anchor, entry[subset], oracle[subset])
            entry["gain_recovered_vs_best_global_s"][subset] = gain_recovered(
                methods[BEST_GLOBAL_S][subset], entry[subset], oracle[subset]
            )


def save_routers(directory: str | Path, fits: dict[str, FitResult], selected: str) -> None:
    """``DIR/hard/``, ``DIR/soft/`` (one router each) and ``DIR/selected.json`` naming the chosen kind."""
    directory = Path(directory)
    for kind, fit in fits.items():
        fit.router.save(directory / kind)
    write_json(directory / SELECTION_FILE, {"selected": selected, "valid_mae_eV_A": {k: f.valid_mae for k, f in fits.items()}})


def load_selected_router(directory: str | Path) -> Router:
    """The router that ``route`` selected on validation, from a ``--out`` directory."""
    directory = Path(directory)
    try:
        selected = json.loads((directory / SELECTION_FILE).read_text())["selected"]
    except (OSError, ValueError, KeyError) as exc:
        raise AdaScaleError(f"{directory}: not a router directory written by `adascale route` ({exc})") from None
    if selected not in KINDS:
        raise AdaScaleError(f"{directory / SELECTION_FILE}: unknown router kind {selected!r}")
    return Router.load(directory / selected)
