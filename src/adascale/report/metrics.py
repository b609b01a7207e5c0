"""Report metrics: subset MAEs with frame-bootstrap confidence intervals, MAE against a
per-sample quantity (nearest-ion distance), and the DESIGN §5 report blocks.

Inputs are per-sample losses l_i in eV/Å (mean over x, y, z of |F_pred - F_ref|) and the
subset masks of :meth:`PredictionSet.masks`; every MAE leaves here multiplied by ``factor``
(see :func:`adascale.units.force_unit_factor`). An empty subset has MAE ``None`` (JSON null).
Any stage reports its own methods (e.g. ``router_hard``) through :func:`method_entry`.
"""

from __future__ import annotations

import numpy as np

from adascale.predictions import frame_groups

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


class FrameBootstrap:
    """Percentile confidence intervals of subset MAEs that resample whole frames.

    Atoms of one frame share a configuration, so their errors are correlated; resampling
    atoms would give intervals that are too narrow. The resampling weights (B, G) (how often
    each of the G frames is drawn in each of the B resamples) are drawn once from ``seed``,
    so all methods share the same resamples and the numbers are reproducible. Per subset
    the frame ids and the resampled sample counts are computed once; an interval then costs
    one ``bincount`` and one (B, G) matrix-vector product. Memory: 8 B G bytes.
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
        rng = np.random.default_rng(seed)
        draws = rng.integers(self.n_frames, size=(n_resamples, self.n_frames))
        draws += self.n_frames * np.arange(n_resamples)[:, None]
        drawn = np.bincount(draws.ravel(), minlength=n_resamples * self.n_frames)
        self.weights = drawn.reshape(n_resamples, self.n_frames).astype(float)
        self._masks = {name: None if mask.all() else mask for name, mask in masks.items()}
        self._groups = {name: groups if mask is None else np.compress(mask, groups) for name, mask in self._masks.items()}
        self._sizes = {
            name: self.weights @ np.bincount(g, minlength=self.n_frames).astype(float) for name, g in self._groups.items()
        }

    def interval(self, loss: np.ndarray, subset: str) -> tuple[float, float] | None:
        """(lo, hi) of the MAE of ``loss`` (N,) over ``subset``; None for an empty subset."""
        groups, mask, sizes = self._groups[subset], self._masks[subset], self._sizes[subset]
        if groups.size == 0:
            return None
        values = loss if mask is None else np.compress(mask, loss)
        totals = self.weights @ np.bincount(groups, weights=values, minlength=self.n_frames)
        means = totals[sizes > 0] / sizes[sizes > 0]  # resamples that drew none of the subset carry no MAE
        tail = 50.0 * (1.0 - self.level)
        lo, hi = np.percentile(means, [tail, 100.0 - tail])
        return float(lo), float(hi)


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
    holds method details such as ``s`` or ``pool``. ``bootstrap`` must be built on ``masks``.
    """
    entry: dict = {name: _scaled(subset_mae(loss, mask), factor) for name, mask in masks.items()}
    if bootstrap is not None:
        intervals = {name: bootstrap.interval(loss, name) for name in masks}
        entry["ci"] = {name: None if ci is None else [ci[0] * factor, ci[1] * factor] for name, ci in intervals.items()}
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
    *,
    mask: np.ndarray | None = None,
    factor: float = 1.0,
) -> list[dict]:
    """MAE of each named loss (N,) in bins of ``values`` (N,), e.g. d_ion in nm.

    Bins are [edges[i], edges[i+1]) plus a last open bin from edges[-1] (``hi`` None);
    samples with NaN values or outside ``mask`` are left out; empty bins have MAE None.
    """
    keep = ~np.isnan(values) if mask is None else mask & ~np.isnan(values)
    which = np.searchsorted(np.asarray(edges, dtype=float), np.compress(keep, values), side="right") - 1
    inside = which >= 0  # below the first edge: no bin
    which = which[inside]
    n_bins = len(edges)
    sizes = np.bincount(which, minlength=n_bins)
    sums = {name: np.bincount(which, weights=np.compress(keep, loss)[inside], minlength=n_bins) for name, loss in losses.items()}
    return [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]) if b + 1 < n_bins else None,
            "count": int(sizes[b]),
            "mae": {name: float(total[b] / sizes[b] * factor) if sizes[b] else None for name, total in sums.items()},
        }
        for b in range(n_bins)
    ]


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
