import numpy as np
import pytest
import torch

from adascale.data.frames import Frame
from adascale.data.regimes import nearest_ion_distance
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.features import FeatureSpec, geometric_features
from adascale.predictions import PredictionSet
from adascale.scales.features import (
    ROUTER_FEATURES_KEY,
    ROUTER_SPEC_KEY,
    attach_router_features,
    force_features,
    frame_features,
)

SPEC = FeatureSpec(species=(1, 8, 11, 17), radii=(2.5, 4.0), switch_width=1.0, softmin_width=0.2)


def _frame(seed: int, n: int = 14, labelled: bool = False) -> Frame:
    """Random atoms in a random triclinic cell (perpendicular widths > 2 * 4 Å), two ions at least."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(9.0, 11.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
    numbers = rng.choice([1, 8, 11, 17], size=n)
    numbers[:2] = [11, 17]
    forces = rng.normal(size=(n, 3)) if labelled else None
    return Frame(
        numbers=numbers, positions=rng.uniform(0, 1, (n, 3)) @ cell, cell=cell, pbc=np.ones(3, bool), forces=forces, energy=None
    )


def _smootherstep_switch(r, outer, width):
    x = np.clip((r - (outer - width)) / width, 0.0, 1.0)
    return 1.0 - (6 * x**5 - 15 * x**4 + 10 * x**3)


def _brute_force(frame: Frame, spec: FeatureSpec) -> np.ndarray:
    """Every pair over an explicit 7x7x7 block of images, straight from the definitions."""
    shifts = np.array([[a, b, c] for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)]) @ frame.cell
    n = len(frame.numbers)
    out = np.zeros((n, len(spec.names)))
    for i in range(n):
        out[i, : len(spec.species)] = [frame.numbers[i] == z for z in spec.species]
        softmin_sum = 1.0
        for j in range(n):
            r = np.linalg.norm(frame.positions[j] + shifts - frame.positions[i], axis=1)
            r = r[r > 1e-9]  # not the atom itself
            for a, radius in enumerate(spec.radii):
                column = len(spec.species) + 1 + a * len(spec.species) + spec.species.index(frame.numbers[j])
                out[i, column] += _smootherstep_switch(r, radius, spec.switch_width).sum()
            if j != i and frame.numbers[j] in spec.ion_species:
                cap, tau = spec.nearest_ion_cap, spec.softmin_width
                softmin_sum += (_smootherstep_switch(r, spec.cutoff, spec.switch_width) * np.exp((cap - r) / tau)).sum()
        out[i, len(spec.species)] = spec.nearest_ion_cap - spec.softmin_width * np.log(softmin_sum)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_geometric_features_match_brute_force_on_triclinic_cells(seed):
    frame = _frame(seed)
    np.testing.assert_allclose(frame_features(frame, SPEC), _brute_force(frame, SPEC), rtol=1e-10, atol=1e-10)


def test_smooth_nearest_ion_distance_brackets_the_exact_one():
    frame = _frame(7, n=20)
    spec = FeatureSpec(species=(1, 8, 11, 17))  # default radii: cap 7 Å
    soft = frame_features(frame, spec)[:, spec.names.index("nearest_ion_A")]
    exact = 10.0 * nearest_ion_distance(frame.positions, frame.numbers, frame.cell, frame.pbc)
    ions_within = (
        frame_features(frame, spec)[:, spec.names.index("count_Z11_r8")]
        + frame_features(frame, spec)[:, spec.names.index("count_Z17_r8")]
    )
    near = exact < spec.nearest_ion_cap - 1.0
    assert near.sum() > 5
    # log-sum-exp bounds: d - tau log(1 + m) <= soft <= d (m = ions within the cutoff)
    assert (soft[near] <= exact[near] + 1e-9).all()
    assert (soft[near] >= exact[near] - spec.softmin_width * np.log(2 + ions_within[near])).all()


def test_features_are_differentiable_in_the_positions():
    frame = _frame(3, n=8)
    batch = AtomsBatch.from_frame(frame, SPEC.cutoff, dtype=torch.float64)
    positions = batch.positions.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: geometric_features(batch.with_positions(p), SPEC), (positions,))


def test_features_are_continuous_when_a_neighbour_crosses_the_cutoff():
    positions = np.array([[0.0, 0, 0], [SPEC.cutoff - 1e-7, 0, 0], [0, 2.0, 0]])
    frames = [
        Frame(
            numbers=np.array([11, 17, 8]),
            positions=positions + [[0, 0, 0], [dx, 0, 0], [0, 0, 0]],
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            forces=None,
            energy=None,
        )
        for dx in (0.0, 2e-7)
    ]
    inside, outside = (frame_features(f, SPEC) for f in frames)
    np.testing.assert_allclose(inside, outside, atol=1e-9)


def test_a_longer_neighbour_list_gives_the_same_features():
    frame = _frame(4)
    short = geometric_features(AtomsBatch.from_frame(frame, SPEC.cutoff, dtype=torch.float64), SPEC)
    long = geometric_features(AtomsBatch.from_frame(frame, SPEC.cutoff + 3.0, dtype=torch.float64), SPEC)
    torch.testing.assert_close(short, long)
    with pytest.raises(ValueError, match="at least"):
        geometric_features(AtomsBatch.from_frame(frame, SPEC.cutoff - 1.0, dtype=torch.float64), SPEC)


def test_spec_round_trips_through_json_and_names_its_columns():
    assert FeatureSpec(**SPEC.to_dict()) == SPEC
    assert len(SPEC.names) == 4 + 1 + 2 * 4
    assert frame_features(_frame(0), SPEC).shape == (14, len(SPEC.names))


def test_force_features_against_hand_computation():
    pred = np.array([[[3.0, 4.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 2.0]]])  # K=3, N=1
    values, names = force_features(pred)
    assert names == ["log1p_gap_0_1", "log1p_gap_1_2", "log1p_force_0", "log1p_force_1", "log1p_force_2"]
    np.testing.assert_allclose(values, np.log1p([[5.0, 2.0, 5.0, 0.0, 2.0]]))


def _predictions_for(frames):
    n = [len(f.numbers) for f in frames]
    total = sum(n)
    return PredictionSet(
        ref=np.zeros((total, 3)),
        pred=np.zeros((2, total, 3)),
        scales=[0.0, 1.0],
        species=np.concatenate([f.numbers for f in frames]),
        frame=np.repeat(np.arange(len(frames)), n),
        atom=np.concatenate([np.arange(k) for k in n]),
        d_ion=np.full(total, 0.5),
        branch_names=["a", "b"],
    )


def test_attach_router_features_stores_features_of_each_sample(tmp_path):
    frames = [_frame(0), _frame(1)]
    predictions = _predictions_for(frames)
    attach_router_features(predictions, frames, SPEC)
    expected = np.concatenate([frame_features(f, SPEC) for f in frames])
    np.testing.assert_allclose(predictions.extras[ROUTER_FEATURES_KEY], expected)
    predictions.save(tmp_path / "p.npz")
    loaded = PredictionSet.load(tmp_path / "p.npz")
    assert FeatureSpec(**loaded.metadata[ROUTER_SPEC_KEY]) == SPEC
    np.testing.assert_allclose(loaded.extras[ROUTER_FEATURES_KEY], expected)


def test_attach_router_features_refuses_frames_that_do_not_match(tmp_path):
    frames = [_frame(0), _frame(1)]
    predictions = _predictions_for(frames)
    with pytest.raises(AdaScaleError, match="frame 1"):
        attach_router_features(predictions, [frames[0], _frame(5)], SPEC, path="other.extxyz")
    with pytest.raises(AdaScaleError, match="refers to frame 1"):
        attach_router_features(predictions, frames[:1], SPEC)
