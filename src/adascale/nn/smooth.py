"""Smooth scalar functions shared by every model: switches, envelopes, clamps and the scale-axis weight map.

Each is C2 (continuous with its first two derivatives) wherever a model uses it, so that
forces -dE/dR, and their derivatives, stay continuous when an atom crosses a cutoff or a
scale crosses an interval end. ``tests/nn`` checks each with ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def switch(r: Tensor, outer: float, width: float) -> Tensor:
    """C2 step: 1 for r <= outer − width, 0 for r >= outer, quintic smootherstep between."""
    x = ((r - (outer - width)) / width).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def polynomial_envelope(x: Tensor, exponent: int = 6) -> Tensor:
    """(E,) smooth cutoff factor of reduced distances x = r / r_c: 1 at x = 0, 0 with zero first and
    second derivatives at x >= 1.

    Taking x rather than (r, r_c) lets r_c be a float or a tensor (E,) of per-edge radii alike (the
    factor is then C2 in them too, by the chain rule) while TorchScript sees one type.
    """
    p = exponent
    xc = x.clamp(max=1.0)
    value = 1.0 - (p + 1) * (p + 2) / 2 * xc**p + p * (p + 2) * xc ** (p + 1) - p * (p + 1) / 2 * xc ** (p + 2)
    return torch.where(x < 1.0, value, torch.zeros_like(value))


def smooth_clamp(x: Tensor, smoothing: float) -> Tensor:
    """clamp(x, 0, 1) with C2 corners: equal to it outside [−δ, δ] and [1 − δ, 1 + δ] (δ = ``smoothing``).

    Built from the ramp g(x) = ∫ S, S the quintic smootherstep from −δ to δ, as g(x) − g(x − 1).
    δ = 0 is the plain clamp.
    """
    if smoothing == 0.0:
        return x.clamp(0.0, 1.0)
    return _smooth_ramp(x, smoothing) - _smooth_ramp(x - 1.0, smoothing)


def _smooth_ramp(x: Tensor, delta: float) -> Tensor:
    """max(x, 0) with a C2 corner on [−δ, δ]: 2δ P((x + δ)/2δ), P(t) = t⁴ (t² − 3t + 5/2) = ∫₀ᵗ smootherstep."""
    t = ((x + delta) / (2.0 * delta)).clamp(0.0, 1.0)
    return torch.where(x >= delta, x, 2.0 * delta * t**4 * (t * (t - 3.0) + 2.5))


def anchor_weights(u: Tensor, scales: Tensor, smoothing: float = 0.0, extrapolate: bool = False) -> Tensor:
    """Weights (N, K) over the anchors of the scale u (N,): Σ_k w_k F_k = F(u) on the axis.

    Each interval j contributes its position t_j = (u − s_j)/(s_{j+1} − s_j), clamped to
    [0, 1] (smoothly with ``smoothing`` > 0, in units of the interval), and
    F = F_0 + Σ_j t_j (F_{j+1} − F_j). With ``extrapolate`` the first and last intervals are
    not clamped outward: the axis continues linearly beyond 0 and 1 (the training surrogate).
    Rows sum to 1; with smoothing 0 and u in [0, 1] this is exactly the axis's interpolation.
    """
    t = (u[:, None] - scales[:-1]) / (scales[1:] - scales[:-1])  # (N, K-1)
    if extrapolate:
        low = torch.zeros_like(scales[:-1]).index_fill(0, torch.tensor([0], device=scales.device), -torch.inf)
        high = torch.ones_like(scales[:-1]).index_fill(0, torch.tensor([len(scales) - 2], device=scales.device), torch.inf)
        t = torch.maximum(torch.minimum(t, high), low)
    else:
        t = smooth_clamp(t, smoothing)
    ones, zeros = torch.ones_like(t[:, :1]), torch.zeros_like(t[:, :1])
    return torch.cat([ones, t], dim=1) - torch.cat([t, zeros], dim=1)


def cubic_wall(r: Tensor, onset: Tensor, width: float) -> Tensor:
    """(E,) dimensionless repulsive wall ((onset − r) / width)³ for r < onset, 0 beyond.

    C2 at the onset (value, slope and curvature all 0 there), so a wall placed at the closest
    distance a model was trained on leaves every training configuration untouched and adds no
    force discontinuity; it reaches 1 at ``width`` inside the onset and grows without bound.
    ``onset`` (E,) Å per edge; an onset of 0 means no wall.
    """
    x = ((onset - r) / width).clamp(min=0.0)
    return x * x * x
