"""The smooth building blocks of nn/: gradients by torch.autograd.gradcheck (float64), their
defining values (plateaus, end values, midpoints), and C2 at every joint, checked by finite
differences of the autograd derivative from each side (a jump in f'' would show as a gap)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from adascale.nn.radial import BesselBasis
from adascale.nn.smooth import anchor_weights, cubic_wall, polynomial_envelope, smooth_clamp, switch

F64 = torch.float64


def grid(lo: float, hi: float, n: int = 41) -> torch.Tensor:
    """Points strictly inside (lo, hi) at irrational-ish offsets, so none sits exactly on a joint."""
    return torch.linspace(lo, hi, n, dtype=F64)[1:-1] + 1e-3 * math.sqrt(2.0)


def derivative(f, x: torch.Tensor) -> torch.Tensor:
    """f'(x) elementwise by autograd (f acts elementwise)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    return grad


def second_derivative_gap(f, joint: float, h: float = 1e-4) -> tuple[float, float, float]:
    """(left f'', right f'', |f'(joint)| jump) at ``joint`` from finite differences of f'."""
    x = torch.tensor([joint - h, joint, joint + h], dtype=F64)
    d = derivative(f, x)
    left, right = float((d[1] - d[0]) / h), float((d[2] - d[1]) / h)
    return left, right, float(abs(d[2] - d[0]))


def assert_c2_at(f, joints: list[float], scale: float = 1.0) -> None:
    """f' is continuous and f'' has no jump at each joint (difference of one-sided f'' ~ O(h))."""
    for joint in joints:
        left, right, jump = second_derivative_gap(f, joint)
        assert jump < 1e-2 * scale, (joint, jump)
        assert abs(left - right) < 1e-2 * scale * max(1.0, abs(left)), (joint, left, right)


def test_the_c2_check_catches_a_c1_function():
    def cubic_step(r):  # C1 but not C2: f'' jumps from 0 to 6 at 0
        x = r.clamp(0.0, 1.0)
        return 3 * x**2 - 2 * x**3

    left, right, _ = second_derivative_gap(cubic_step, 0.0)
    assert abs(left - right) > 5.0


def test_switch():
    outer, width = 3.0, 1.0
    f = lambda r: switch(r, outer, width)  # noqa: E731
    assert gradcheck(f, (grid(1.5, 3.5).requires_grad_(True),))
    r = torch.tensor([0.0, 1.9, 2.0, 2.5, 3.0, 3.1, 9.0], dtype=F64)
    torch.testing.assert_close(f(r), torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0], dtype=F64))
    inside = grid(2.0, 3.0)
    assert (derivative(f, inside) < 0).all()  # strictly decreasing between the plateaus
    assert_c2_at(f, [outer - width, outer])


@pytest.mark.parametrize("exponent", [5, 6])
def test_polynomial_envelope(exponent):
    cutoff = 4.0
    f = lambda r: polynomial_envelope(r / cutoff, exponent)  # noqa: E731
    assert gradcheck(f, (grid(0.1, 4.5).requires_grad_(True),))
    r = torch.tensor([0.0, 4.0, 4.5], dtype=F64)
    torch.testing.assert_close(f(r), torch.tensor([1.0, 0.0, 0.0], dtype=F64))
    assert ((f(grid(0.0, 4.0)) > 0) & (f(grid(0.0, 4.0)) < 1)).all()
    assert_c2_at(f, [cutoff])


def test_polynomial_envelope_is_smooth_in_a_per_edge_cutoff():
    r = grid(1.0, 3.0, 9)
    cutoff = torch.full_like(r, 3.5).requires_grad_(True)
    assert gradcheck(lambda c: polynomial_envelope(r / c), (cutoff,))
    assert_c2_at(lambda c: polynomial_envelope(torch.full_like(c, 2.0) / c), [2.0], scale=10.0)


@pytest.mark.parametrize("delta", [0.05, 0.2])
def test_smooth_clamp(delta):
    f = lambda x: smooth_clamp(x, delta)  # noqa: E731
    assert gradcheck(f, (grid(-0.5, 1.5).requires_grad_(True),))
    outside = torch.cat([grid(-1.0, -delta), grid(delta, 1 - delta), grid(1 + delta, 2.0)])
    torch.testing.assert_close(f(outside), outside.clamp(0.0, 1.0))  # exactly the clamp outside the corners
    torch.testing.assert_close(smooth_clamp(outside, 0.0), outside.clamp(0.0, 1.0))
    corners = torch.cat([grid(-delta, delta), grid(1 - delta, 1 + delta)])
    d = derivative(f, corners)
    assert ((d > 0) & (d < 1)).all()  # monotone, slope between the plateau's 0 and the ramp's 1
    assert_c2_at(f, [-delta, delta, 1 - delta, 1 + delta], scale=1 / delta)


def test_anchor_weights():
    scales = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    u = torch.tensor([0.0, 0.2, 0.4, 0.7, 1.0], dtype=F64)
    w = anchor_weights(u, scales)
    expected = torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]], dtype=F64)
    torch.testing.assert_close(w, expected)  # linear interpolation on the axis, one-hot at anchors
    smooth = lambda x: anchor_weights(x, scales, smoothing=0.1)  # noqa: E731
    assert gradcheck(smooth, (grid(-0.2, 1.2).requires_grad_(True),))
    torch.testing.assert_close(smooth(grid(-0.2, 1.2)).sum(dim=1), torch.ones(39, dtype=F64))
    # joints of the smoothed clamp, per interval: s_j + (+-delta, 1 +- delta) * (s_{j+1} - s_j)
    joints = [a + x * (b - a) for a, b in ((0.0, 0.4), (0.4, 1.0)) for x in (-0.1, 0.1, 0.9, 1.1)]
    for k in range(3):
        assert_c2_at(lambda x, k=k: anchor_weights(x, scales, smoothing=0.1)[:, k], joints, scale=100.0)
    beyond = anchor_weights(torch.tensor([-0.5, 1.5], dtype=F64), scales, extrapolate=True)
    torch.testing.assert_close(beyond.sum(dim=1), torch.ones(2, dtype=F64))
    torch.testing.assert_close(beyond[0], torch.tensor([2.25, -1.25, 0.0], dtype=F64))  # the first interval continued


def test_bessel_basis():
    basis = BesselBasis(6, cutoff=5.0).double()
    assert gradcheck(basis, (grid(0.2, 5.0).requires_grad_(True),))
    r = torch.tensor([1.3, 5.0], dtype=F64)
    n = torch.arange(1, 7, dtype=F64)
    expected = math.sqrt(2 / 5.0) * torch.sin(n * math.pi * r[:, None] / 5.0) / r[:, None]
    # the frequencies buffer is made in float32 (n pi / r_c to ~1e-7 relative), also in float64 models
    torch.testing.assert_close(basis(r), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(basis(r)[1], torch.zeros(6, dtype=F64), atol=1e-6, rtol=0)  # every sine vanishes at r_c
    small = basis(torch.tensor([1e-6], dtype=F64))[0]
    torch.testing.assert_close(small, math.sqrt(2 / 5.0) * n * math.pi / 5.0, rtol=1e-6, atol=0)  # finite limit at r -> 0


def test_cubic_wall():
    """Zero beyond the onset, 1 at one width inside it, cubic in the depth, C2 at the onset."""
    onset = torch.tensor(2.0, dtype=F64)
    r = torch.tensor([1.6, 1.8, 1.9, 2.0, 2.5], dtype=F64)
    assert torch.allclose(cubic_wall(r, onset, 0.2), torch.tensor([8.0, 1.0, 0.125, 0.0, 0.0], dtype=F64))
    assert gradcheck(lambda x: cubic_wall(x, onset, 0.2), (grid(1.0, 3.0).requires_grad_(True),))
    assert gradcheck(lambda o: cubic_wall(grid(1.0, 3.0), o, 0.3), (onset.clone().requires_grad_(True),))
    assert_c2_at(lambda x: cubic_wall(x, onset, 1.0), [2.0])  # f'' = 6 (onset - r) / width³: O(h) at the joint
