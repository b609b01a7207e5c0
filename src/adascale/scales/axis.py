"""The scale axis: K >= 2 anchors at fixed positions on [0, 1], linear in between.

A prediction at scale s mixes the two anchors that bracket it,
F(s) = (1 - t) F_j + t F_{j+1} with t = (s - s_j) / (s_{j+1} - s_j). Because the weights sum
to one, the same formula applies to force *errors* F_k - F_ref, which is how the oracles use it.
"""

from __future__ import annotations

import numpy as np

from adascale.errors import AdaScaleError


def as_pool(values: object, *, name: str = "pool") -> np.ndarray:
    """Sorted, de-duplicated scales in [0, 1] from a sequence or a ``"0,0.5,1"`` string."""
    if isinstance(values, str):
        try:
            values = [float(part) for part in values.split(",") if part.strip()]
        except ValueError:
            raise AdaScaleError(f"{name}: expected comma-separated numbers such as 0,0.5,1, got {values!r}") from None
    pool = np.unique(np.asarray(values, dtype=float).ravel())
    if pool.size == 0:
        raise AdaScaleError(f"{name}: needs at least one scale")
    if not np.isfinite(pool).all() or pool[0] < 0.0 or pool[-1] > 1.0:
        raise AdaScaleError(f"{name}: scales must lie in [0, 1], got {pool.tolist()}")
    return pool


def bracket(scales: np.ndarray, s: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower anchor index j in [0, K-2] and position t in [0, 1] inside [s_j, s_{j+1}].

    scales (K,) anchor positions; s scalar or any shape, each in [0, 1]. Returns (j, t) of s's shape.
    """
    s = np.asarray(s, dtype=float)
    if ((s < 0.0) | (s > 1.0) | np.isnan(s)).any():
        raise AdaScaleError("scales must lie in [0, 1]")
    j = np.clip(np.searchsorted(scales, s, side="right") - 1, 0, len(scales) - 2)
    t = (s - scales[j]) / (scales[j + 1] - scales[j])
    return j, t


def interpolate(values: np.ndarray, scales: np.ndarray, s: float | np.ndarray) -> np.ndarray:
    """Values at scale s: (K, N, ...) anchor values -> (N, ...).

    s is one scale for every sample, or (N,) one scale per sample.
    """
    j, t = bracket(scales, s)
    if j.ndim == 0:
        j, t = int(j), float(t)
        if t == 0.0:
            return values[j].copy()
        if t == 1.0:
            return values[j + 1].copy()
        out = values[j] * (1.0 - t)  # in place from here: the same numbers as (1 - t) a + t b
        out += values[j + 1] * t
        return out
    samples = np.arange(values.shape[1])
    t = t.reshape(t.shape + (1,) * (values.ndim - 2))
    return (1.0 - t) * values[j, samples] + t * values[j + 1, samples]
