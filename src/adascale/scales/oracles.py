"""Per-sample losses along the scale axis and the label-aware routers (oracles) (docs/concepts.md, "Oracles").

Everything works on anchor errors E = pred - ref, shape (K, N, 3) in eV/Å: the error at
scale s interpolates like the forces do. A sample's loss is l_i(s) = mean_c |E_i,c(s)|.

Routing granularity: with ``groups`` = None every sample picks its own scale; with
``groups`` (N,) dense frame ids (see :func:`adascale.predictions.frame_groups`) every frame
picks one scale for all its atoms, minimising the sum of its atoms' losses. Either way the
reported loss is per sample, so MAEs stay comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from adascale.predictions import PredictionSet
from adascale.scales.axis import as_pool, interpolate
from adascale.scales.median import grouped_weighted_median, weighted_median


def anchor_errors(predictions: PredictionSet) -> np.ndarray:
    """(K, N, 3) force errors pred - ref, eV/Å."""
    return predictions.pred - predictions.ref[None]


#: Samples per block of the elementwise loss work: a block's (BLOCK, 3) temporaries stay in
#: the CPU cache instead of streaming N-sized arrays through memory once per operation.
BLOCK = 1 << 14


def blocks(n: int) -> Iterator[slice]:
    """Consecutive slices of at most BLOCK samples covering range(n)."""
    return (slice(start, start + BLOCK) for start in range(0, n, BLOCK))


def scale_loss(errors: np.ndarray, scales: np.ndarray, s: float | np.ndarray) -> np.ndarray:
    """(N,) per-sample loss l_i(s) for one scale s, or for (N,) scales one per sample."""
    s = np.asarray(s, dtype=float)
    loss = np.empty(errors.shape[1])
    for block in blocks(errors.shape[1]):
        loss[block] = mean_abs(interpolate(errors[:, block], scales, s if s.ndim == 0 else s[block]), overwrite=True)
    return loss


def mean_abs(x: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """Mean of |x| over the last axis of length 3 (x, y, z); (..., 3) -> (...).

    Written as three column sums: numpy's reduction over a short last axis is several
    times slower, and this is the inner loop of every oracle at 10^6 samples.
    ``overwrite=True`` takes |x| in place (x is a temporary of the caller's).
    """
    a = np.abs(x, out=x) if overwrite else np.abs(x)
    total = a[..., 0] + a[..., 1]
    total += a[..., 2]
    total /= 3.0
    return total


@dataclass
class Routing:
    """The outcome of a routing: per-sample loss (N,) eV/Å and the scale each sample got (N,)."""

    loss: np.ndarray
    s: np.ndarray


class ScaleLosses:
    """Per-sample losses of one prediction set at the scales asked for, each computed once.

    Refinement and reporting ask for the same scales again and again; one (N,) array per
    scale is cheap to keep. ``unit_loss`` gives the loss per routing unit: per sample, or
    summed per frame when ``groups`` is given.
    """

    def __init__(self, errors: np.ndarray, scales: np.ndarray, groups: np.ndarray | None = None):
        self.errors = errors
        self.scales = np.asarray(scales, dtype=float)
        self.groups = groups
        self.n_units = errors.shape[1] if groups is None else int(groups.max()) + 1
        self._sample: dict[float, np.ndarray] = {}
        self._unit: dict[float, np.ndarray] = {}
        self._last_best: tuple[frozenset, np.ndarray | None] = (frozenset(), None)

    @property
    def n_samples(self) -> int:
        return int(self.errors.shape[1])

    def sample_loss(self, s: float) -> np.ndarray:
        """(N,) l_i(s)."""
        s = float(s)
        if s not in self._sample:
            self._sample[s] = scale_loss(self.errors, self.scales, s)
        return self._sample[s]

    def unit_loss(self, s: float) -> np.ndarray:
        """(U,) loss per routing unit at s: l_i(s) per sample, or its sum over each frame."""
        if self.groups is None:
            return self.sample_loss(s)
        s = float(s)
        if s not in self._unit:
            self._unit[s] = np.bincount(self.groups, weights=self.sample_loss(s), minlength=self.n_units)
        return self._unit[s]

    def best_scale(self, pool: np.ndarray) -> np.ndarray:
        """(N,) the scale in ``pool`` each sample is routed to: its unit's lowest loss (lower scale on ties)."""
        _, s_unit = running_min((self.unit_loss(p), p) for p in np.sort(pool))
        return s_unit if self.groups is None else s_unit[self.groups]

    def best_unit_loss(self, pool: np.ndarray) -> np.ndarray:
        """(U,) each unit's loss at its best scale in ``pool``.

        Refinement asks for growing pools; when ``pool`` extends the previous one, only the
        new scales are folded in.
        """
        key = frozenset(float(p) for p in pool)
        previous, best = self._last_best
        if best is None or not previous <= key:
            previous, best = frozenset(), None
        for p in key - previous:
            best = self.unit_loss(p) if best is None else np.minimum(best, self.unit_loss(p))
        self._last_best = (key, best)
        return best

    def pool_loss(self, pool: np.ndarray) -> float:
        """L(P): mean over samples of the loss under the best-in-pool routing."""
        return float(self.best_unit_loss(pool).sum() / self.n_samples)

    def forget_except(self, keep: np.ndarray) -> None:
        """Drop cached scales not in ``keep`` (refinement moves scales; stale ones waste memory)."""
        keep = {float(s) for s in keep}
        for cache in (self._sample, self._unit):
            for s in set(cache) - keep:
                del cache[s]


def route_pool(losses: ScaleLosses, pool: np.ndarray) -> Routing:
    """Pool oracle: each unit takes the scale in ``pool`` with its lowest loss (lower on ties).

    The hard oracle is this with the anchors' scales as the pool.
    """
    pool = as_pool(pool)
    s = losses.best_scale(pool)
    loss = np.empty(losses.n_samples)
    for p in pool:
        np.copyto(loss, losses.sample_loss(p), where=s == p)
    return Routing(loss=loss, s=s)


def running_min(candidates: Iterable[tuple[np.ndarray, float | np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise minimum over (loss (U,), label) candidates and the winning label (U,).

    Labels are scalars or (U,) arrays; the first candidate wins ties. One pass per
    candidate over contiguous arrays, instead of stacking them and an argmin along a
    short axis, which is several times slower at 10^6 samples.
    """
    best = label = None
    for loss, value in candidates:
        if best is None:
            best, label = loss.copy(), np.broadcast_to(np.asarray(value, dtype=float), loss.shape).copy()
            continue
        better = loss < best
        np.copyto(best, loss, where=better)
        np.copyto(label, value, where=better)
    return best, label


def _breakpoints(errors: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Kinks of the loss inside interval j, clipped to [0, 1], and the slopes d.

    With e = E_j and d = E_{j+1} - E_j, each component contributes |e + t d| = |d| |t - x|
    with x = -e / d, so |d| weighs kink x. Components with d = 0 are constant in t
    (weight 0). Shapes (N, 3).
    """
    e = errors[j]
    d = errors[j + 1] - e
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(d != 0.0, -e / d, 0.0)
    return np.clip(x, 0.0, 1.0, out=x), d


def _sorted_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three columns of x (N, 3) sorted per row, as (N,) arrays: a three-element sorting
    network of elementwise min/max (the values np.sort gives, without sorting N tiny rows)."""
    low, high = np.minimum(x[:, 0], x[:, 1]), np.maximum(x[:, 0], x[:, 1])
    first, rest = np.minimum(low, x[:, 2]), np.maximum(low, x[:, 2])
    return first, np.minimum(high, rest), np.maximum(high, rest)


def route_continuous(errors: np.ndarray, scales: np.ndarray, groups: np.ndarray | None = None) -> Routing:
    """Continuous oracle, exact: per unit (sample or frame), s* = argmin over s in [0, 1] of its loss.

    Ties keep the lower scale. No grid: see the two helpers for the exact minimisations.
    """
    if groups is None:
        return _continuous_per_sample(errors, scales)
    return _continuous_per_frame(errors, scales, groups)


def _continuous_per_sample(errors: np.ndarray, scales: np.ndarray) -> Routing:
    """l_i is convex and piecewise linear in t inside each interval, so its minimum sits at
    t = 0, t = 1 or a clipped kink x_c: five candidates per interval, O(N K) in all, done
    block by block (each sample on its own, so blocks give the same numbers as one pass)."""
    loss, s = np.empty(errors.shape[1]), np.empty(errors.shape[1])
    for block in blocks(errors.shape[1]):
        loss[block], s[block] = _continuous_block(errors[:, block], scales)
    return Routing(loss=loss, s=s)


def _continuous_block(errors: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loss, s*) of :func:`_continuous_per_sample` on (K, n, 3) errors.

    Candidates come in increasing s (each sample's kinks sorted), so that the first-wins
    rule of :func:`running_min` keeps the lower scale on a flat minimum."""
    anchor_loss = mean_abs(errors)  # (K, n)

    def candidates() -> Iterator[tuple[np.ndarray, float | np.ndarray]]:
        for j in range(errors.shape[0] - 1):
            yield anchor_loss[j], scales[j]
            x, d = _breakpoints(errors, j)
            for kink in _sorted_columns(x):
                at_kink = kink[:, None] * d
                at_kink += errors[j]
                yield mean_abs(at_kink, overwrite=True), scales[j] + (scales[j + 1] - scales[j]) * kink
        yield anchor_loss[-1], scales[-1]

    return running_min(candidates())


def _continuous_per_frame(errors: np.ndarray, scales: np.ndarray, groups: np.ndarray) -> Routing:
    """Inside each interval a frame's summed loss is minimised by the weighted median of its
    atoms' kinks; the best interval per frame wins. O(N log N) for the one sort."""
    n_groups = int(groups.max()) + 1

    def candidates() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for j in range(errors.shape[0] - 1):
            x, d = _breakpoints(errors, j)
            t = grouped_weighted_median(x, np.abs(d), np.repeat(groups, 3), n_groups)
            s = scales[j] + (scales[j + 1] - scales[j]) * t
            yield np.bincount(groups, weights=scale_loss(errors, scales, s[groups]), minlength=n_groups), s

    _, s_frame = running_min(candidates())
    s = s_frame[groups]
    return Routing(loss=scale_loss(errors, scales, s), s=s)


def best_global_scale(errors: np.ndarray, scales: np.ndarray) -> tuple[float, float]:
    """The single scale s minimising the MAE over all given samples, exactly, and that MAE.

    Per interval the MAE is a weighted sum of |t - x| over all kinks, minimised by their
    weighted median (expected O(N) by selection, no sort); the best interval wins.
    """
    best = (0.0, np.inf)
    for j in range(errors.shape[0] - 1):
        x, d = _breakpoints(errors, j)
        s = float(scales[j] + (scales[j + 1] - scales[j]) * weighted_median(x, np.abs(d)))
        mae = float(scale_loss(errors, scales, s).mean())
        if mae < best[1]:
            best = (s, mae)
    return best
