"""Seed-null attribution: how much of an oracle's gain over the best fixed scale needs a difference in scale.

A per-atom oracle picks whichever model's error is smaller there, and that pays even between
two models of one scale that differ only in their training seed. So the oracle gain of the
scale pair is set against the gain of such a seed pair (the null) on the same frames and
atoms, per subset:

    gain = (MAE_best_fixed - MAE_oracle) / MAE_best_fixed      (a fraction)
    attributable = scale_gain - seed_gain

with MAE_best_fixed each pair's own ``best_global_s`` (fitted on its own fit set). The 95 %
interval of ``attributable`` resamples frames jointly: one draw of frame weights serves both
pairs, so what the frames share (hard frames make both gains move) cancels in the difference.
A ratio of resampled sums needs no subset sizes, so a resample costs one (B, G) @ (G, M) product.
"""

from __future__ import annotations

import numpy as np

from adascale.errors import AdaScaleError
from adascale.predictions import PredictionSet, frame_groups
from adascale.scales.methods import BEST_GLOBAL_S, ORACLE_CONTINUOUS, ORACLE_HARD
from adascale.scales.metrics import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bin_masks, resample_weights

#: The report's oracle keys (``attribution`` {hard, continuous}) and the methods they read.
ORACLES: dict[str, str] = {"hard": ORACLE_HARD, "continuous": ORACLE_CONTINUOUS}
#: The per-sample losses (N,) eV/Å one pair must provide.
PAIR_METHODS: tuple[str, ...] = (BEST_GLOBAL_S, ORACLE_HARD, ORACLE_CONTINUOUS)


def check_null_matches(predictions: PredictionSet, null: PredictionSet, null_label: str) -> None:
    """A null set must hold the analysed set's frames and atoms, sample for sample: same
    frame, atom and species indices and the same reference forces (the same frames, not just
    frames of the same shape). Raises a one-line AdaScaleError naming the first mismatch."""
    if null.N != predictions.N:
        raise AdaScaleError(f"{null_label}: null set has {null.N} samples, the analysed set {predictions.N}: not the same frames")
    for name in ("frame", "atom", "species"):
        differ = np.flatnonzero(getattr(null, name) != getattr(predictions, name))
        if differ.size:
            raise AdaScaleError(
                f"{null_label}: field {name!r} differs from the analysed set at sample {int(differ[0])}: not the same frames and atoms"
            )
    if not np.allclose(null.ref, predictions.ref, rtol=1e-6, atol=1e-9):
        sample = int(np.flatnonzero(~np.isclose(null.ref, predictions.ref, rtol=1e-6, atol=1e-9).all(axis=1))[0])
        frame = int(predictions.frame[sample])
        raise AdaScaleError(f"{null_label}: frame {frame}: field 'ref' differs from the analysed set: not the same frames")


def attribute(
    scale: dict[str, np.ndarray],
    null: dict[str, np.ndarray],
    frame: np.ndarray,
    masks: dict[str, np.ndarray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, dict]]:
    """{hard, continuous} -> {subset} -> {scale_gain, seed_gain, attributable, ci}.

    ``scale`` and ``null``: per-sample losses (N,) eV/Å of :data:`PAIR_METHODS` for the scale
    pair and the seed pair, on the same samples (``frame`` (N,), ``masks`` {subset: (N,) bool}).
    Gains of an empty subset, and the interval where no resample is defined, are None.
    """
    groups, n_frames = frame_groups(frame)
    names = [(pair, method) for pair in ("scale", "null") for method in PAIR_METHODS]
    losses = {"scale": scale, "null": null}
    # (G, methods x subsets) per-frame sums; column = method index * subsets + subset index
    sums = np.stack(
        [
            np.bincount(groups, weights=np.where(mask, losses[pair][method], 0.0), minlength=n_frames)
            for pair, method in names
            for mask in masks.values()
        ],
        axis=1,
    )
    resampled = resample_weights(n_frames, n_resamples, seed) @ sums  # (B, columns)
    both = np.concatenate([sums.sum(axis=0, keepdims=True), resampled])  # row 0: the data itself
    total = both.reshape(both.shape[0], len(names), len(masks))  # (1 + B, methods, subsets)
    column = {name: k for k, name in enumerate(names)}
    tail = 50.0 * (1.0 - level)
    out: dict[str, dict[str, dict]] = {}
    for key, oracle in ORACLES.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            gains = {
                pair: 1.0 - total[:, column[pair, oracle]] / total[:, column[pair, BEST_GLOBAL_S]] for pair in ("scale", "null")
            }  # (1 + B, subsets)
        difference = gains["scale"] - gains["null"]
        block = {}
        for m, subset in enumerate(masks):
            defined = difference[1:, m][np.isfinite(difference[1:, m])]
            ci = [float(v) for v in np.percentile(defined, [tail, 100.0 - tail])] if defined.size else None
            block[subset] = {
                "scale_gain": _finite(gains["scale"][0, m]),
                "seed_gain": _finite(gains["null"][0, m]),
                "attributable": _finite(difference[0, m]),
                "ci": ci,
            }
        out[key] = block
    return out


def attribute_by_distance(
    scale: dict[str, np.ndarray],
    null: dict[str, np.ndarray],
    frame: np.ndarray,
    d_ion: np.ndarray,
    edges: list[float],
    *,
    mask: np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{hard, continuous} -> one entry per bin of nearest-ion distance ``d_ion`` (N,) nm (the bins
    of :func:`adascale.scales.metrics.bin_masks`, among ``mask``): {lo, hi, count, scale_gain,
    seed_gain, attributable, ci}, from :func:`attribute` on the bins as subsets."""
    bins = bin_masks(d_ion, edges, mask)
    by_bin = attribute(scale, null, frame, {str(b): m for b, m in bins.items()}, n_resamples=n_resamples, seed=seed)
    return {
        key: [
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]) if b + 1 < len(edges) else None,
                "count": int(np.count_nonzero(bins[b])),
                **block[str(b)],
            }
            for b in bins
        ]
        for key, block in by_bin.items()
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
