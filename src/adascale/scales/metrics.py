"""Metrics of scale methods: subset MAEs with frame-bootstrap confidence intervals, MAE against a
per-sample quantity (nearest-ion distance), and the report's method blocks.

Inputs are per-sample losses l_i in eV/Å (mean over x, y, z of |F_pred - F_ref|) and the
subset masks of :meth:`PredictionSet.masks`; every MAE leaves here multiplied by ``factor``
(see :func:`adascale.units.force_unit_factor`). An empty subset has MAE ``None`` (JSON null).
Any stage reports its own methods (e.g. ``router_hard``) through :func:`method_entry`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adascale.data.regimes import DEFAULT_ION_SPECIES
from adascale.errors import AdaScaleError
from adascale.predictions import frame_groups

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
#: The random stream of the seed draws of :meth:`FrameBootstrap.summarize_seeds` (frames use stream 0).
SEED_STREAM = 1


@dataclass(frozen=True)
class ReportContext:
    """How every stage of one report states its MAEs: the unit, the frame-bootstrap resamples of
    the 95 % intervals, and the ion species (atomic numbers) that define the ``ions`` and
    ``close_contact`` subsets of frames scored directly."""

    units: str = "kJ/mol/nm"
    n_resamples: int = DEFAULT_RESAMPLES
    ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES


class FrameBootstrap:
    """Subset MAEs with percentile confidence intervals that resample whole frames.

    Atoms of one frame share a configuration, so their errors are correlated; resampling
    atoms would give intervals that are too narrow. The resampling weights W (B, G) (how
    often each of the G frames is drawn in each of the B resamples) are drawn once from
    ``seed``, so all methods share the same resamples and the numbers are reproducible.
    Each subset's samples are indexed once in frame order, so a method costs one segmented
    sum per subset (per-frame sums S (G, subsets)) and one product W @ S. Memory: 8 B G bytes.
    """

    def __init__(
        self,
        frame: np.ndarray,
        masks: dict[str, np.ndarray],
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        level: float = DEFAULT_LEVEL,
    ):
        groups, self.n_frames = frame_groups(frame)
        self.level = level
        self.weights = resample_weights(self.n_frames, n_resamples, seed)
        in_order = bool((groups[1:] >= groups[:-1]).all())  # samples come frame by frame (the usual case)
        order = None if in_order else np.argsort(groups, kind="stable")
        self._segments = {}  # subset -> (sample indices in frame order, frames present, their first positions)
        sizes = np.zeros((self.n_frames, len(masks)))
        for column, (name, mask) in enumerate(masks.items()):
            index = np.flatnonzero(mask) if order is None else order[mask[order]]
            ordered = groups[index]  # non-decreasing: each frame's first position is where the id changes
            starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])) if index.size else index
            self._segments[name] = (index, ordered[starts], starts)
            sizes[:, column] = np.bincount(ordered, minlength=self.n_frames)
        self._resampled_sizes = self.weights @ sizes  # (B, subsets)

    def frame_sums(self, loss: np.ndarray) -> np.ndarray:
        """(G, subsets) the sum of ``loss`` (N,) over each frame's samples of each subset."""
        sums = np.zeros((self.n_frames, len(self._segments)))
        for column, (index, present, starts) in enumerate(self._segments.values()):
            if index.size:
                sums[present, column] = np.add.reduceat(loss.take(index), starts)
        return sums

    def summarize(self, loss: np.ndarray) -> dict[str, tuple[float | None, tuple[float, float] | None]]:
        """{subset: (MAE, (lo, hi))} of ``loss`` (N,); (None, None) for an empty subset."""
        return self.summarize_seeds([loss])

    def summarize_seeds(
        self, losses: Sequence[np.ndarray], seed: int = 0
    ) -> dict[str, tuple[float | None, tuple[float, float] | None]]:
        """{subset: (MAE, (lo, hi))} of the mean over S models that differ only in their training
        seed, each a loss (N,) on the same samples, with an interval that resamples seeds too.

        Every resample draws S seeds with replacement (from ``seed``, a stream apart from the
        frames') and the frames as :meth:`summarize` does, the same frames for every drawn
        seed: seeds and frames are crossed factors (every seed sees every frame), so both are
        resampled independently (the "pigeonhole" bootstrap for crossed designs, slightly
        conservative). The statistic is the mean over the drawn seeds of their pooled MAE on
        the drawn frames. One seed, or S identical seeds, give :meth:`summarize`'s interval
        exactly; with two seeds about a quarter of the resamples hold one seed twice, so the
        interval reaches both seeds' MAEs.
        """
        points, means = self.seed_resamples(losses, seed)
        return {
            name: (None, None) if np.isnan(points[column]) else (float(points[column]), self._interval(means[:, column]))
            for column, name in enumerate(self._segments)
        }

    def summarize_ratio(
        self, numerator: Sequence[np.ndarray], denominator: Sequence[np.ndarray], seed: int = 0
    ) -> dict[str, tuple[float | None, tuple[float, float] | None]]:
        """{subset: (ratio, (lo, hi))}: the MAE of one model over another's, each the mean over its
        S seeds as :meth:`summarize_seeds` gives it, with a paired interval.

        numerator, denominator: S losses (N,) each, seed k of one paired with seed k of the other
        (same training seed); every resample draws the same seeds and frames for both, so what
        the two models share (hard frames, a lucky seed) cancels in the ratio. (None, None) where
        either MAE is undefined or zero.
        """
        if len(numerator) != len(denominator):
            raise AdaScaleError(f"summarize_ratio: {len(numerator)} seeds against {len(denominator)}; pair seed k with seed k")
        (top, top_means), (bottom, bottom_means) = (self.seed_resamples(x, seed) for x in (numerator, denominator))
        result = {}
        for column, name in enumerate(self._segments):
            if not top[column] >= 0 or not bottom[column] > 0:
                result[name] = (None, None)
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = top_means[:, column] / bottom_means[:, column]
            result[name] = (float(top[column] / bottom[column]), self._interval(ratios))
        return result

    def seed_resamples(self, losses: Sequence[np.ndarray], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The point MAEs (subsets,) of the mean over S seeds' losses (N,) and their resampled
        values (B, subsets), NaN where a subset is empty or a resample holds none of its samples.

        Seeds are drawn from ``seed`` (and the seed count), frames from this bootstrap's weights:
        two models with as many seeds get the same draws, so their resamples are paired.
        """
        n_seeds = len(losses)
        sums = np.stack([self.frame_sums(loss) for loss in losses])  # (S, G, subsets)
        per_seed = self.weights @ sums  # (S, B, subsets)
        drawn = resample_weights(n_seeds, self.weights.shape[0], seed, stream=SEED_STREAM) if n_seeds > 1 else None
        totals = per_seed[0] if drawn is None else np.einsum("bs,sbm->bm", drawn, per_seed) / n_seeds
        sizes = np.array([index.size for index, _, _ in self._segments.values()], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            points = np.where(sizes > 0, sums.sum(axis=(0, 1)) / n_seeds / sizes, np.nan)
            means = np.where(self._resampled_sizes > 0, totals / self._resampled_sizes, np.nan)
        return points, means

    def _interval(self, values: np.ndarray) -> tuple[float, float] | None:
        """The central ``level`` percentile interval of the finite resampled ``values``; None if there are none."""
        values = values[np.isfinite(values)]
        tail = 50.0 * (1.0 - self.level)
        return tuple(float(v) for v in np.percentile(values, [tail, 100.0 - tail])) if values.size else None


@functools.lru_cache(maxsize=2)
def resample_weights(n_frames: int, n_resamples: int, seed: int, stream: int = 0) -> np.ndarray:
    """(B, G) read-only: how often each of G frames is drawn in each of B resamples (with
    replacement, from ``seed``). A pure function of its arguments, so the reporters of one
    prediction set share it instead of drawing it again (10.7 MB at B = 1000, G = 1337).
    ``stream`` > 0 draws an independent sequence from the same seed (e.g. for seeds, not frames)."""
    rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
    draws = rng.integers(n_frames, size=(n_resamples, n_frames))
    draws += n_frames * np.arange(n_resamples)[:, None]
    drawn = np.bincount(draws.ravel(), minlength=n_resamples * n_frames)
    weights = drawn.reshape(n_resamples, n_frames).astype(float)
    weights.flags.writeable = False
    return weights


def subset_mae(loss: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of ``loss`` over ``mask``; None when the subset is empty."""
    n = int(np.count_nonzero(mask))
    return float(np.compress(mask, loss).sum() / n) if n else None


def counts(masks: dict[str, np.ndarray]) -> dict[str, int]:
    """Samples per subset: the report's ``counts`` block."""
    return {name: int(np.count_nonzero(mask)) for name, mask in masks.items()}


def method_entry(
    loss: np.ndarray,
    masks: dict[str, np.ndarray],
    *,
    bootstrap: FrameBootstrap | None = None,
    factor: float = 1.0,
    **extra: object,
) -> dict:
    """One ``methods`` entry: {subset: MAE, ..., "ci": {subset: [lo, hi]}, **extra}.

    loss (N,) per-sample eV/Å; MAEs and intervals are multiplied by ``factor``. ``extra``
    holds method details such as ``s`` or ``pool``. ``bootstrap`` must be built on the same ``masks``.
    """
    if bootstrap is None:
        entry: dict = {name: _scaled(subset_mae(loss, mask), factor) for name, mask in masks.items()}
    else:
        entry = _summary_entry(bootstrap.summarize(loss), factor)
    entry.update(extra)
    return entry


def gain_recovered(baseline: float | None, method: float | None, oracle: float | None) -> float | None:
    """Fraction of the oracle's gain over a baseline that a method recovers:
    (baseline - method) / (baseline - oracle); None when undefined (no gain to recover)."""
    if baseline is None or method is None or oracle is None or not baseline > oracle:
        return None
    return float((baseline - method) / (baseline - oracle))


def mae_by_bins(
    losses: dict[str, np.ndarray],
    values: np.ndarray,
    edges: list[float],
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    factor: float = 1.0,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """MAE of each named loss (N,) in bins of ``values`` (N,), e.g. d_ion in nm, each with
    its frame-bootstrap interval (``frame`` (N,) frame index).

    Bins are [edges[i], edges[i+1]) plus a last open bin from edges[-1] (``hi`` None);
    samples with NaN values, below the first edge or outside ``mask`` are left out; empty
    bins have MAE None.
    """
    bins = bin_masks(values, edges, mask)
    bootstrap = FrameBootstrap(frame, bins, n_resamples=n_resamples, seed=seed)
    entries = {name: method_entry(loss, bins, bootstrap=bootstrap, factor=factor) for name, loss in losses.items()}
    return [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]) if b + 1 < len(edges) else None,
            "count": int(np.count_nonzero(bins[b])),
            "mae": {name: entry[b] for name, entry in entries.items()},
            "ci": {name: entry["ci"][b] for name, entry in entries.items()},
        }
        for b in bins
    ]


def bin_masks(values: np.ndarray, edges: list[float], mask: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """{bin: (N,) mask} of ``values`` (N,) in [edges[i], edges[i+1]) and a last open bin from
    edges[-1]; NaN values, values below the first edge and samples outside ``mask`` are in none."""
    which = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    valid = ~np.isnan(values) & (which >= 0)
    if mask is not None:
        valid &= mask
    return {b: valid & (which == b) for b in range(len(edges))}


def seed_frame_bootstrap(
    losses_per_seed: Sequence[np.ndarray],
    frame: np.ndarray,
    masks: dict[str, np.ndarray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    factor: float = 1.0,
    **extra: object,
) -> dict:
    """A ``methods`` entry for one model trained with S seeds: the subset MAEs of the mean
    over seeds, their intervals resampling seeds and frames (:meth:`FrameBootstrap.summarize_seeds`),
    and each seed's own MAEs under ``per_seed``.

    losses_per_seed: S per-sample losses (N,) eV/Å on the same samples (same ``frame`` (N,)
    and ``masks``); values leave multiplied by ``factor``. With one seed the interval holds
    no training variance: it is the frame bootstrap's.
    """
    if not losses_per_seed:
        raise AdaScaleError("seed_frame_bootstrap: needs the losses of at least one seed")
    bootstrap = FrameBootstrap(frame, masks, n_resamples=n_resamples, seed=seed)
    entry = _summary_entry(bootstrap.summarize_seeds(losses_per_seed, seed=seed), factor)
    entry["per_seed"] = {
        name: [_scaled(subset_mae(loss, mask), factor) for loss in losses_per_seed] for name, mask in masks.items()
    }
    entry["seeds"] = len(losses_per_seed)
    entry.update(extra)
    return entry


def seed_frame_ratio(
    numerator_per_seed: Sequence[np.ndarray],
    denominator_per_seed: Sequence[np.ndarray],
    frame: np.ndarray,
    masks: dict[str, np.ndarray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """{subset: ratio, "ci": {subset: [lo, hi]}} of two models' seed-mean MAEs (numerator over
    denominator, e.g. 0.85 = 15 % lower), the interval from the paired resampling of seeds and
    frames of :meth:`FrameBootstrap.summarize_ratio`: the same resamples as
    :func:`seed_frame_bootstrap` draws from the same ``seed``. Losses (N,) eV/Å as there, seed k
    of one model paired with seed k of the other."""
    bootstrap = FrameBootstrap(frame, masks, n_resamples=n_resamples, seed=seed)
    return _summary_entry(bootstrap.summarize_ratio(numerator_per_seed, denominator_per_seed, seed=seed), 1.0)


def _summary_entry(summary: dict[str, tuple], factor: float) -> dict:
    """{subset: MAE, "ci": {subset: [lo, hi]}} of a bootstrap summary, scaled by ``factor``."""
    entry: dict = {name: _scaled(mae, factor) for name, (mae, _) in summary.items()}
    entry["ci"] = {name: None if ci is None else [v * factor for v in ci] for name, (_, ci) in summary.items()}
    return entry


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def mae_by_species(losses: dict[str, np.ndarray], species: np.ndarray, *, factor: float = 1.0) -> dict[str, dict[str, float]]:
    """{method: {chemical symbol: MAE}} of named per-sample losses (N,), species (N,) atomic numbers."""
    from ase.data import chemical_symbols

    species = np.asarray(species)  # atomic numbers: small, so counted by bincount (no sort of N)
    sizes = np.bincount(species)
    present = np.flatnonzero(sizes)
    return {
        name: {
            chemical_symbols[int(z)]: float(total * factor / size)
            for z, total, size in zip(present, np.bincount(species, weights=loss)[present], sizes[present])
        }
        for name, loss in losses.items()
    }
