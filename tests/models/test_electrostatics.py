"""Electrostatics against independent references: Madelung constant, a textbook Ewald sum, direct Coulomb."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ewald_reference import COULOMB_EV_A, ewald_energy, excluded_pair_energy

from adascale.data.frames import Frame
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.electrostatics import Electrostatics

NACL_MADELUNG = 1.747564594633


def window(r: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """The documented exclusion window, written here from its definition (not the code's):
    f = 1 for r <= inner, 0 for r >= outer, the C2 (quintic) smoothstep 1 - (10 x^3 - 15 x^4 + 6 x^5) between."""
    x = np.clip((np.asarray(r, float) - inner) / (outer - inner), 0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def energy(method: str, frame: Frame, charges: np.ndarray, cutoff: float, inner: float, outer: float) -> float:
    electrostatics = Electrostatics(cutoff, method, inner, outer).double()
    batch = AtomsBatch.from_frames([frame], cutoff, dtype=torch.float64)
    q = torch.as_tensor(charges, dtype=torch.float64)
    return float((q * electrostatics(q, batch, batch.edge_vectors())).sum())


def point_charge_box(seed: int, n: int = 40, box: float = 9.0) -> tuple[Frame, np.ndarray]:
    """Neutral random charges on a jittered grid (no pair closer than ~1 Å)."""
    rng = np.random.default_rng(seed)
    per_side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    positions = (grid + 0.5 + rng.uniform(-0.3, 0.3, grid.shape)) * box / per_side
    charges = rng.normal(size=n)
    charges -= charges.mean()
    frame = Frame(np.ones(n, dtype=np.int64), positions, np.eye(3) * box, np.ones(3, bool), None, None)
    return frame, charges


@pytest.mark.parametrize("method, tolerance", [("ewald", 1e-6), ("pme", 2e-4)])
def test_rock_salt_madelung_constant(method, tolerance):
    """E = sum_i q_i phi_i per ion pair is -M e^2 / r0 for point charges (no exclusion)."""
    a = 5.64
    base = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    sites = np.concatenate([base, base + [0.5, 0, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = ((cells[:, None, :] + sites[None]) * a).reshape(-1, 3)
    charges = np.tile([1.0] * 4 + [-1.0] * 4, len(cells))
    frame = Frame(np.where(charges > 0, 11, 17), positions, np.eye(3) * 2 * a, np.ones(3, bool), None, None)
    e = energy(method, frame, charges, cutoff=5.0, inner=0.1, outer=0.2)
    madelung = -e / (len(positions) / 2) * (a / 2) / COULOMB_EV_A
    assert madelung == pytest.approx(NACL_MADELUNG, rel=tolerance)


@pytest.mark.parametrize("method, tolerance", [("ewald", 1e-6), ("pme", 3e-4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_point_charge_box_matches_textbook_ewald_minus_exclusion(method, tolerance, seed):
    frame, charges = point_charge_box(seed)
    inner, outer = 1.5, 2.5
    reference = ewald_energy(charges, frame.positions, frame.cell, alpha=0.45) - excluded_pair_energy(
        charges, frame.positions, frame.cell, lambda r: window(r, inner, outer), outer
    )
    assert energy(method, frame, charges, 4.0, inner, outer) == pytest.approx(reference, rel=tolerance)


def test_molecule_is_direct_coulomb_with_exclusion():
    frame, charges = point_charge_box(3, n=20, box=7.0)
    molecule = Frame(frame.numbers, frame.positions, np.zeros((3, 3)), np.zeros(3, bool), None, None)
    inner, outer = 1.5, 2.5
    d = np.linalg.norm(frame.positions[:, None] - frame.positions[None], axis=-1)
    i, j = np.triu_indices(len(d), 1)
    kept = 1 - window(d[i, j], inner, outer)
    reference = COULOMB_EV_A * np.sum(charges[i] * charges[j] * kept / d[i, j])
    assert energy("ewald", molecule, charges, 3.0, inner, outer) == pytest.approx(reference, rel=1e-12)


def pair_energy(r: float, inner: float, outer: float, q: tuple[float, float] = (0.8, -0.6)) -> float:
    """Electrostatic energy (eV) of two charges r Å apart, alone (no cell)."""
    positions = np.array([[0.0, 0.0, 0.0], [r * 0.6, r * 0.8, 0.0]])
    pair = Frame(np.array([8, 1]), positions, np.zeros((3, 3)), np.zeros(3, bool), None, None)
    return energy("ewald", pair, np.array(q), 3.0, inner, outer)


def test_exclusion_window_is_one_inside_zero_outside_one_half_at_the_midpoint():
    """E(r) = k q1 q2 (1 - f(r)) / r, so f(r) = 1 - E r / (k q1 q2) read off the energy of a pair.

    Removing the exclusion makes f = 0 everywhere; a wrong width moves f off 1 just outside
    ``inner``, off 0 just inside ``outer`` and off 0.5 at the midpoint."""
    inner, outer, k_qq = 1.5, 2.5, COULOMB_EV_A * 0.8 * -0.6
    r = np.array([0.9, 1.2, 1.5, 1.55, 1.8, 2.0, 2.2, 2.45, 2.5, 2.8, 3.5])
    f = np.array([1.0 - pair_energy(x, inner, outer) * x / k_qq for x in r])
    np.testing.assert_allclose(f, window(r, inner, outer), atol=1e-12)
    np.testing.assert_allclose(f[r <= inner], 1.0, atol=1e-12)
    np.testing.assert_allclose(f[r >= outer], 0.0, atol=1e-12)
    assert f[r == 2.0] == pytest.approx(0.5, abs=1e-12)
    assert 0.99 < f[r == 1.55][0] < 1.0 and 0.0 < f[r == 2.45][0] < 0.01  # smooth, not a hard step
    # another window: the same definition with its own inner and outer
    assert 1.0 - pair_energy(1.75, 1.0, 2.5) * 1.75 / k_qq == pytest.approx(0.5, abs=1e-12)


def test_molecule_in_a_large_box_approaches_the_molecule():
    """Periodic and molecular paths are the same physics: a neutral cluster in a 60 Å box ~ alone."""
    frame, charges = point_charge_box(4, n=12, box=5.0)
    alone = Frame(frame.numbers, frame.positions, np.zeros((3, 3)), np.zeros(3, bool), None, None)
    boxed = Frame(frame.numbers, frame.positions + 27.5, np.eye(3) * 60.0, np.ones(3, bool), None, None)
    e_alone = energy("ewald", alone, charges, 4.0, 1.5, 2.5)
    e_boxed = energy("ewald", boxed, charges, 4.0, 1.5, 2.5)
    assert e_boxed == pytest.approx(e_alone, rel=2e-3)


def test_mixed_periodicity_is_refused():
    frame, charges = point_charge_box(5)
    slab = Frame(frame.numbers, frame.positions, frame.cell, np.array([True, True, False]), None, None)
    with pytest.raises(AdaScaleError, match="fully periodic cell or a molecule"):
        energy("ewald", slab, charges, 4.0, 1.5, 2.5)


@pytest.mark.parametrize("kwargs", [dict(method="p3m"), dict(exclusion_inner=3.0), dict(exclusion_outer=5.0)])
def test_invalid_settings_are_clear_errors(kwargs):
    settings = dict(cutoff=4.0, method="ewald", exclusion_inner=2.0, exclusion_outer=3.0) | kwargs
    with pytest.raises(AdaScaleError):
        Electrostatics(**settings)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_torchpme_buffers_stay_out_of_saved_weights(method):
    module = Electrostatics(5.0, method)
    assert len(list(module.buffers())) > 0  # torch-pme keeps its constants as buffers ...
    assert module.state_dict() == {}  # ... which follow from the settings and are not saved
    module.load_state_dict({})  # weights saved without them load strictly
