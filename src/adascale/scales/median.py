"""Exact minimisers of sums of weighted absolute deviations: argmin_t sum_k w_k |t - x_k|.

Inside one anchor interval a sample's loss is mean_c |e_c + t d_c| = mean_c |d_c| |t - x_c|
with breakpoints x_c = -e_c / d_c, so the best single scale for a set of samples is a
weighted median of their breakpoints. For t restricted to [0, 1], clipping each x_c to
[0, 1] changes the objective only by a constant, so callers clip first and the median is
already in range.
"""

from __future__ import annotations

import numpy as np

_SORT_BELOW = 4096  # below this many points a plain sort is faster than another selection pass
_PIVOT_SAMPLE = 101


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """A minimiser of sum_k w_k |t - x_k| over t (the smallest x_m with W(x <= x_m) >= W/2).

    x, w (M,) with w >= 0. Expected O(M) by weighted quickselect: each pass keeps the side of
    a pivot that holds the median, so 10^6 points cost a few array passes instead of a sort.
    Returns 0.0 when the total weight is zero (every t is a minimiser).
    """
    x = np.asarray(x, dtype=float).ravel()
    w = np.asarray(w, dtype=float).ravel()
    half = 0.5 * w.sum()
    if not half > 0.0:
        return 0.0
    below = 0.0  # weight of discarded points that lie below every remaining point
    while x.size > _SORT_BELOW:
        sample = x[:: x.size // _PIVOT_SAMPLE]
        pivot = np.partition(sample, sample.size // 2)[sample.size // 2]
        left = x < pivot  # np.compress below is several times faster than boolean indexing
        w_left = np.compress(left, w)
        weight_left = w_left.sum()
        if below + weight_left >= half:
            x, w = np.compress(left, x), w_left
            continue
        below += weight_left + np.compress(x == pivot, w).sum()
        if below >= half:
            return float(pivot)
        right = x > pivot
        x, w = np.compress(right, x), np.compress(right, w)
    order = np.argsort(x)
    cumulative = below + np.cumsum(w[order])
    k = min(int(np.searchsorted(cumulative, half, side="left")), x.size - 1)
    return float(x[order][k])


def grouped_weighted_median(x: np.ndarray, w: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """:func:`weighted_median` of each group at once: (M,) points with group ids -> (n_groups,).

    One lexicographic sort by (group, x), then each group's median is found by binary search
    on the running weight. Groups without weight (or without points) get 0.0.
    """
    x = np.asarray(x, dtype=float).ravel()
    w = np.asarray(w, dtype=float).ravel()
    groups = np.asarray(groups).ravel()
    order = np.lexsort((x, groups))
    xs, cumulative, gs = x[order], np.cumsum(w[order]), groups[order]
    ids = np.arange(n_groups)
    start = np.searchsorted(gs, ids, side="left")
    end = np.searchsorted(gs, ids, side="right")
    before = np.where(start > 0, cumulative[np.maximum(start - 1, 0)], 0.0)
    total = np.bincount(groups, weights=w, minlength=n_groups)
    k = np.searchsorted(cumulative, before + 0.5 * total, side="left")
    k = np.clip(k, start, np.maximum(end - 1, start))
    has_weight = (total > 0) & (end > start)
    return np.where(has_weight, xs[np.minimum(k, xs.size - 1)], 0.0)
