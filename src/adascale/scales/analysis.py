"""The scale analysis of a prediction set, as report dictionaries (units, counts, methods, ...).

:func:`analyze` (``adascale analyze``): every anchor as a fixed scale, the best single
scale (fitted on a fit set), the hard, continuous and pool oracles, how the anchors
complement each other, and MAE against nearest-ion distance. :func:`refine`
(``adascale refine``): loss-guided pool refinement fitted on the fit set and reported on the
analysed set. Every MAE carries a 95 % frame-bootstrap interval. Without a fit set the
fitted quantities are fitted in-sample, and the report says so.
"""

from __future__ import annotations

import numpy as np

from adascale.data.regimes import ALL, IONS
from adascale.errors import AdaScaleError
from adascale.predictions import PredictionSet, frame_groups
from adascale.scales.attribution import attribute, attribute_by_distance, check_null_matches
from adascale.scales.axis import as_pool
from adascale.scales.methods import BEST_GLOBAL_S, ORACLE_CONTINUOUS, ORACLE_HARD, ORACLE_POOL, fixed_methods, fixed_name
from adascale.scales.metrics import (
    DEFAULT_RESAMPLES,
    FrameBootstrap,
    counts,
    gain_recovered,
    mae_by_bins,
    mae_by_species,
    method_entry,
)
from adascale.scales.oracles import Routing, ScaleLosses, anchor_errors, best_global_scale, route_continuous, route_pool
from adascale.scales.refine import refine_pool
from adascale.units import force_unit_factor

GRANULARITIES: tuple[str, ...] = ("sample", "frame")
DISTANCE_EDGES_NM: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
S_STAR_BINS = 10
IN_SAMPLE = "in-sample (no fit set given: optimistic)"


def default_pool(scales: np.ndarray) -> np.ndarray:
    """The anchors plus the midpoint of each pair of neighbouring anchors."""
    return as_pool(np.concatenate([scales, 0.5 * (scales[:-1] + scales[1:])]))


def scale_losses(predictions: PredictionSet, granularity: str = "sample") -> ScaleLosses:
    """The loss table of a prediction set, routing samples or whole frames."""
    if granularity not in GRANULARITIES:
        raise AdaScaleError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    groups = frame_groups(predictions.frame)[0] if granularity == "frame" else None
    return ScaleLosses(anchor_errors(predictions), predictions.scales, groups)


def check_same_anchors(predictions: PredictionSet, fit: PredictionSet, fit_label: str) -> None:
    """A fit set must have the analysed set's anchors, or fitted scales would mean something else."""
    if fit.K != predictions.K or not np.allclose(fit.scales, predictions.scales):
        raise AdaScaleError(
            f"{fit_label}: fit set has {fit.K} anchors at {fit.scales.tolist()}, "
            f"the analysed set {predictions.K} at {predictions.scales.tolist()}"
        )


class _Reporter:
    """Shared by analyze and refine: the analysed set's masks, bootstrap and units."""

    def __init__(self, predictions: PredictionSet, units: str, n_resamples: int, seed: int):
        self.predictions = predictions
        self.units = units
        self.factor = force_unit_factor(units)
        self.masks = predictions.masks()
        self.n_resamples, self.seed = n_resamples, seed
        self.bootstrap = FrameBootstrap(predictions.frame, self.masks, n_resamples=n_resamples, seed=seed)

    def entry(self, loss: np.ndarray, **extra: object) -> dict:
        return method_entry(loss, self.masks, bootstrap=self.bootstrap, factor=self.factor, **extra)

    def report(self, methods: dict[str, dict], settings: dict) -> dict:
        """The report skeleton (units, counts, methods), with ``gain_recovered`` added to every non-fixed method."""
        fixed = fixed_methods(methods)
        for name, entry in methods.items():
            if name not in fixed and name != ORACLE_CONTINUOUS and ORACLE_CONTINUOUS in methods:
                entry["gain_recovered"] = {
                    subset: gain_recovered(_best(methods, fixed, subset), entry[subset], methods[ORACLE_CONTINUOUS][subset])
                    for subset in self.masks
                }
        return {
            "units": self.units,
            "counts": counts(self.masks),
            "methods": methods,
            "settings": {
                "bootstrap": {"resamples": self.n_resamples, "seed": self.seed, "level": 0.95, "resampled": "frames"},
                "anchors": {"scales": self.predictions.scales.tolist(), "branch_names": self.predictions.branch_names},
                "subsets": self.predictions.subset_definition(),
                "gain_recovered": "(best fixed anchor - method) / (best fixed anchor - oracle_continuous), per subset",
                **settings,
            },
        }

    def fixed_methods(self, losses: ScaleLosses) -> dict[str, dict]:
        return {fixed_name(s): self.entry(losses.sample_loss(s), s=float(s)) for s in losses.scales}


def analyze(
    predictions: PredictionSet,
    fit: PredictionSet | None = None,
    fit_label: str | None = None,
    *,
    pool: np.ndarray | str | None = None,
    granularity: str = "sample",
    units: str = "kJ/mol/nm",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    distance_edges_nm: tuple[float, ...] = DISTANCE_EDGES_NM,
    null: PredictionSet | None = None,
    null_fit: PredictionSet | None = None,
    null_label: str | None = None,
    null_fit_label: str | None = None,
) -> dict:
    """The full scale analysis of ``predictions`` as a report dictionary (JSON-ready).

    ``best_global_s`` is fitted on ``fit`` (e.g. validation predictions) when given; the
    oracles look at the analysed set's labels by definition. ``pool`` defaults to
    :func:`default_pool`. ``granularity="frame"`` routes whole frames. With ``null`` (two
    models of one scale differing only in seed, on the same frames and atoms; its
    best_global_s fitted on ``null_fit``) the report gains ``attribution`` and
    ``attribution_by_distance`` (:mod:`adascale.scales.attribution`).
    """
    reporter = _Reporter(predictions, units, n_resamples, seed)
    if null is not None:
        check_null_matches(predictions, null, null_label or "null set")
    losses = scale_losses(predictions, granularity)
    s_best = fitted_best_scale(predictions, losses, fit, fit_label)
    pool = default_pool(predictions.scales) if pool is None else as_pool(pool)
    routings = {**oracle_routings(losses), ORACLE_POOL: route_pool(losses, pool)}
    methods = reporter.fixed_methods(losses)
    methods[BEST_GLOBAL_S] = reporter.entry(losses.sample_loss(s_best), s=s_best)
    methods.update({name: reporter.entry(routing.loss) for name, routing in routings.items()})
    methods[ORACLE_POOL]["pool"] = pool.tolist()
    per_sample = {name: losses.sample_loss(entry["s"]) for name, entry in methods.items() if "s" in entry}
    per_sample.update({name: routing.loss for name, routing in routings.items()})
    report = reporter.report(
        methods,
        {"granularity": granularity, "fitted_on": fit_label if fit is not None else IN_SAMPLE},
    )
    report["complementarity"] = complementarity(losses, routings[ORACLE_CONTINUOUS], reporter.masks, predictions.branch_names)
    report.update(
        breakdown(predictions, per_sample, units=units, n_resamples=n_resamples, seed=seed, distance_edges_nm=distance_edges_nm)
    )
    if null is not None:
        blocks = _seed_null_blocks(
            predictions,
            per_sample,
            null,
            pair_losses(null, null_fit, null_fit_label, granularity),
            n_resamples,
            seed,
            distance_edges_nm,
        )
        report["settings"]["attribution"] = blocks.pop("settings") | {
            "null_fitted_on": (null_fit_label or "null fit set") if null_fit is not None else IN_SAMPLE,
            "null": null_label or "null set",
        }
        report.update(blocks)
    return report


def seed_null(
    predictions: PredictionSet,
    null: PredictionSet,
    fit: PredictionSet | None = None,
    null_fit: PredictionSet | None = None,
    *,
    fit_label: str | None = None,
    null_label: str | None = None,
    null_fit_label: str | None = None,
    granularity: str = "sample",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    distance_edges_nm: tuple[float, ...] = DISTANCE_EDGES_NM,
) -> dict:
    """The seed-null blocks of a report on their own: {attribution, attribution_by_distance,
    settings}, as :func:`analyze` adds them (for a pipeline whose report comes from elsewhere).

    ``predictions``/``fit``: the scale pair on the test and fit sets; ``null``/``null_fit``:
    two seeds of one scale on the same test frames and atoms, and on a fit set of its own.
    """
    check_null_matches(predictions, null, null_label or "null set")
    blocks = _seed_null_blocks(
        predictions,
        pair_losses(predictions, fit, fit_label, granularity),
        null,
        pair_losses(null, null_fit, null_fit_label, granularity),
        n_resamples,
        seed,
        distance_edges_nm,
    )
    blocks["settings"].update(
        {
            "fitted_on": (fit_label or "fit set") if fit is not None else IN_SAMPLE,
            "null": null_label or "null set",
            "null_fitted_on": (null_fit_label or "null fit set") if null_fit is not None else IN_SAMPLE,
            "granularity": granularity,
        }
    )
    return blocks


def _seed_null_blocks(
    predictions: PredictionSet,
    scale: dict[str, np.ndarray],
    null: PredictionSet,
    null_losses: dict[str, np.ndarray],
    n_resamples: int,
    seed: int,
    distance_edges_nm: tuple[float, ...],
) -> dict:
    """{attribution, attribution_by_distance (all atoms and ions), settings} from both pairs' losses."""
    masks = predictions.masks()
    common = {"n_resamples": n_resamples, "seed": seed}
    return {
        "attribution": attribute(scale, null_losses, predictions.frame, masks, **common),
        "attribution_by_distance": {
            "edges_nm": list(distance_edges_nm),
            **{
                subset: attribute_by_distance(
                    scale,
                    null_losses,
                    predictions.frame,
                    predictions.d_ion,
                    list(distance_edges_nm),
                    mask=masks[subset],
                    **common,
                )
                for subset in (ALL, IONS)
            },
        },
        "settings": {
            "null_branch_names": null.branch_names,
            "gain": "(best_global_s - oracle) / best_global_s of each pair, per subset; attributable = scale_gain - seed_gain",
            "ci": f"95 % percentile interval of {n_resamples} resamples (seed {seed}); frames resampled jointly in both sets",
        },
    }


def fitted_best_scale(predictions: PredictionSet, losses: ScaleLosses, fit: PredictionSet | None, fit_label: str | None) -> float:
    """``best_global_s`` of a pair: fitted on ``fit`` when given (same anchors), else in-sample."""
    if fit is not None:
        check_same_anchors(predictions, fit, fit_label or "fit set")
    return best_global_scale(losses.errors if fit is None else anchor_errors(fit), predictions.scales)[0]


def oracle_routings(losses: ScaleLosses) -> dict[str, Routing]:
    """The hard (best anchor) and continuous oracles of a loss table."""
    return {
        ORACLE_HARD: route_pool(losses, losses.scales),
        ORACLE_CONTINUOUS: route_continuous(losses.errors, losses.scales, losses.groups),
    }


def pair_losses(
    predictions: PredictionSet, fit: PredictionSet | None = None, fit_label: str | None = None, granularity: str = "sample"
) -> dict[str, np.ndarray]:
    """Per-sample losses (N,) eV/Å of one pair's best_global_s and oracles, the inputs of
    :func:`adascale.scales.attribution.attribute`."""
    losses = scale_losses(predictions, granularity)
    out = {BEST_GLOBAL_S: losses.sample_loss(fitted_best_scale(predictions, losses, fit, fit_label))}
    out.update({name: routing.loss for name, routing in oracle_routings(losses).items()})
    return out


def breakdown(
    predictions: PredictionSet,
    per_sample: dict[str, np.ndarray],
    *,
    units: str = "kJ/mol/nm",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    distance_edges_nm: tuple[float, ...] = DISTANCE_EDGES_NM,
) -> dict:
    """``mae_by_distance`` (all atoms and ions, bins of d_ion with frame-bootstrap intervals) and
    ``mae_by_species`` of named per-sample losses (N,) eV/Å, e.g. every method of a report."""
    masks, factor = predictions.masks(), force_unit_factor(units)
    by_distance = {
        subset: mae_by_bins(
            per_sample,
            predictions.d_ion,
            list(distance_edges_nm),
            predictions.frame,
            mask=masks[subset],
            factor=factor,
            n_resamples=n_resamples,
            seed=seed,
        )
        for subset in (ALL, IONS)
    }
    return {
        "mae_by_distance": {"edges_nm": list(distance_edges_nm), **by_distance},
        "mae_by_species": mae_by_species(per_sample, predictions.species, factor=factor),
    }


def method_losses(predictions: PredictionSet, methods: dict[str, dict]) -> dict[str, np.ndarray]:
    """Per-sample losses (N,) eV/Å of a report's scale methods, rebuilt from their ``s`` and
    ``pool`` (fixed scales, best_global_s, oracle_pool) and the label-reading oracles."""
    losses = scale_losses(predictions)
    out = {name: losses.sample_loss(entry["s"]) for name, entry in methods.items() if "s" in entry}
    if ORACLE_HARD in methods:
        out[ORACLE_HARD] = route_pool(losses, predictions.scales).loss
    if ORACLE_CONTINUOUS in methods:
        out[ORACLE_CONTINUOUS] = route_continuous(losses.errors, predictions.scales).loss
    if "pool" in methods.get(ORACLE_POOL, {}):
        out[ORACLE_POOL] = route_pool(losses, as_pool(methods[ORACLE_POOL]["pool"])).loss
    return out


def complementarity(losses: ScaleLosses, continuous: Routing, masks: dict[str, np.ndarray], branch_names: list[str]) -> dict:
    """Per subset: how often each anchor is the best one (ties to the shorter range), the
    correlation of the anchors' per-sample losses and of their force-error components,
    and the distribution of the continuous oracle's s*."""
    anchor_loss = np.stack([losses.sample_loss(s) for s in losses.scales])  # (K, N)
    winner = np.argmin(anchor_loss, axis=0)
    names = [fixed_name(s) for s in losses.scales]
    block: dict = {"anchors": dict(zip(names, branch_names))}
    for subset, mask in masks.items():
        n = int(np.count_nonzero(mask))
        if n == 0:
            block[subset] = None
            continue
        every = n == mask.size  # the whole set: no copies
        wins = np.bincount(winner if every else np.compress(mask, winner), minlength=len(names)) / n
        errors = (losses.errors if every else np.compress(mask, losses.errors, axis=1)).reshape(len(names), -1)
        s_star = continuous.s if every else np.compress(mask, continuous.s)
        histogram = np.histogram(s_star, bins=S_STAR_BINS, range=(0.0, 1.0))[0] / n
        block[subset] = {
            "win_fraction": dict(zip(names, wins.tolist())),
            "loss_correlation": _correlation(anchor_loss if every else np.compress(mask, anchor_loss, axis=1)),
            "error_correlation": _correlation(errors),
            "s_star": {
                "mean": float(s_star.mean()),
                "quartiles": np.percentile(s_star, [25, 50, 75]).tolist(),
                "at_anchor": float(np.isin(s_star, losses.scales).mean()),
                "histogram": {"edges": np.linspace(0.0, 1.0, S_STAR_BINS + 1).tolist(), "fraction": histogram.tolist()},
            },
        }
    return block


def refine(
    predictions: PredictionSet,
    fit: PredictionSet | None = None,
    fit_label: str | None = None,
    *,
    init: np.ndarray | str | None = None,
    max_size: int = 9,
    tol: float = 1e-3,
    update: str = "insert",
    granularity: str = "sample",
    units: str = "kJ/mol/nm",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Refine a pool on ``fit`` (default: in-sample) and report it on ``predictions``.

    The report holds the fixed anchors, the continuous oracle and ``oracle_pool`` for the
    final pool, and ``refinement`` {initial, final, history: [{pool, mae, fit_mae, step}]},
    where ``mae`` is on the analysed set and ``fit_mae`` the loss the refinement minimised.
    """
    reporter = _Reporter(predictions, units, n_resamples, seed)
    losses = scale_losses(predictions, granularity)
    if fit is not None:
        check_same_anchors(predictions, fit, fit_label or "fit set")
    fit_losses = losses if fit is None else scale_losses(fit, granularity)
    init = predictions.scales if init is None else as_pool(init, name="init")
    history = refine_pool(fit_losses, init, max_size=max_size, tol=tol, update=update)
    final = history[-1].pool
    methods = reporter.fixed_methods(losses)
    methods[ORACLE_CONTINUOUS] = reporter.entry(route_continuous(losses.errors, predictions.scales, losses.groups).loss)
    methods[ORACLE_POOL] = reporter.entry(route_pool(losses, final).loss, pool=final.tolist())
    report = reporter.report(
        methods,
        {"granularity": granularity, "fitted_on": fit_label if fit is not None else IN_SAMPLE},
    )
    report["refinement"] = {
        "initial": history[0].pool.tolist(),
        "final": final.tolist(),
        "update": update,
        "tol": tol,
        "max_size": max_size,
        "history": [
            {
                "pool": step.pool.tolist(),
                "mae": losses.pool_loss(step.pool) * reporter.factor,
                "fit_mae": step.loss * reporter.factor,
                "step": step.kind,
            }
            for step in history
        ],
    }
    return report


def _best(methods: dict[str, dict], names: list[str], subset: str) -> float | None:
    values = [methods[name][subset] for name in names if methods[name][subset] is not None]
    return min(values) if values else None


def _correlation(values: np.ndarray) -> list[list[float]] | None:
    """Pearson correlation matrix of the rows of (K, M) values; None with fewer than 2 columns."""
    if values.shape[1] < 2:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(values)
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]
