"""adascale predict: the PredictionSet contract for K anchors (models and ASE calculators), and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import labelled_frames
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.frames import Frame, read_frames, write_frames
from adascale.data.regimes import nearest_ion_distance
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.io import MODEL_FILE, WEIGHTS_FILE, load_model, save_model
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN
from adascale.predictions import PredictionSet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two model directories (3.0 Å local, 3.5 Å long-range) and a labelled data file."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    save_model(root / "local", PaiNN([1, 8, 11, 17], cutoff=3.0, features=8, interactions=1))
    save_model(
        root / "long",
        LongRangePaiNN([1, 8, 11, 17], cutoff=3.5, features=8, interactions=1, exclusion_inner=1.5, exclusion_outer=2.5),
    )
    write_frames(root / "data.extxyz", labelled_frames(3, seed=5))
    return root


def invoke(*args: str):
    result = CliRunner().invoke(app, ["predict", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_prediction_set_matches_the_contract(setup, tmp_path):
    out = tmp_path / "pred.npz"
    invoke(
        "--model",
        str(setup / "local"),
        "--model",
        str(setup / "long"),
        "--data",
        str(setup / "data.extxyz"),
        "--out",
        str(out),
        "--threads",
        "1",
    )
    ps = PredictionSet.load(out)
    frames = read_frames(setup / "data.extxyz")
    n = sum(len(f) for f in frames)
    assert ps.pred.shape == (2, n, 3) and ps.ref.shape == (n, 3)
    assert ps.scales.tolist() == [0.0, 1.0]
    assert ps.branch_names == [str(setup / "local"), str(setup / "long")]
    assert np.allclose(ps.ref, np.concatenate([f.forces for f in frames]))
    assert ps.frame.tolist() == sum(([k] * len(f) for k, f in enumerate(frames)), [])
    assert ps.atom.tolist() == sum((list(range(len(f))) for f in frames), [])
    assert np.array_equal(ps.species, np.concatenate([f.numbers for f in frames]))
    d = np.concatenate([nearest_ion_distance(f.positions, f.numbers, f.cell, f.pbc) for f in frames])
    assert np.allclose(ps.d_ion, d, equal_nan=True)
    for k, name in enumerate(("local", "long")):  # each anchor's forces are that branch's forces
        branch = load_model(setup / name)
        direct = branch(AtomsBatch.from_frames([frames[1]], branch.cutoff))["forces"].numpy()
        assert np.allclose(ps.pred[k][ps.frame == 1], direct, atol=1e-6)
        assert ps.extras[f"latent_{k}"].shape == (n, 8)


def test_an_ase_calculator_serves_as_a_branch(setup, tmp_path):
    from ase.calculators.lj import LennardJones

    out = tmp_path / "pred.npz"
    invoke(
        "--calculator",
        "ase.calculators.lj:LennardJones",
        "--model",
        str(setup / "local"),
        "--data",
        str(setup / "data.extxyz"),
        "--out",
        str(out),
    )
    ps = PredictionSet.load(out)
    assert ps.branch_names == [str(setup / "local"), "ase.calculators.lj:LennardJones"]  # models first, then calculators
    frame = read_frames(setup / "data.extxyz")[0]
    atoms = frame.to_atoms()
    atoms.calc = LennardJones()
    assert np.allclose(ps.pred[1][ps.frame == 0], atoms.get_forces())


def test_a_calculator_spec_given_as_model_keeps_its_place(setup, tmp_path):
    out = tmp_path / "pred.npz"
    invoke(
        "--model",
        "ase.calculators.lj:LennardJones",
        "--model",
        str(setup / "local"),
        "--data",
        str(setup / "data.extxyz"),
        "--out",
        str(out),
    )
    assert PredictionSet.load(out).branch_names[0] == "ase.calculators.lj:LennardJones"


def test_errors_are_clear(setup, tmp_path):
    data, out = str(setup / "data.extxyz"), str(tmp_path / "x.npz")
    torch.manual_seed(0)
    save_model(tmp_path / "water_only", PaiNN([1, 8], cutoff=3.0, features=8, interactions=1))
    with pytest.raises(AdaScaleError, match=r"data.extxyz: frame 0: species \[11, 17\] unknown to model"):
        invoke("--model", str(setup / "local"), "--model", str(tmp_path / "water_only"), "--data", data, "--out", out)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MODEL_FILE).write_text((setup / "local" / MODEL_FILE).read_text())
    (tmp_path / "broken" / WEIGHTS_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        invoke("--model", str(setup / "local"), "--model", str(tmp_path / "broken"), "--data", data, "--out", out)
    with pytest.raises(AdaScaleError, match="need at least 2 branches"):
        invoke("--model", str(setup / "local"), "--data", data, "--out", out)
    with pytest.raises(AdaScaleError, match="cannot import 'no_such_module'"):
        invoke("--model", str(setup / "local"), "--calculator", "no_such_module:f", "--data", data, "--out", out)
    with pytest.raises(
        AdaScaleError, match=r"frame 0: branch tiny_data:truncated_forces_calculator gave forces of shape \(16, 3\)"
    ):
        invoke(
            "--model", str(setup / "local"), "--calculator", "tiny_data:truncated_forces_calculator", "--data", data, "--out", out
        )
    unlabelled = tmp_path / "unlabelled.extxyz"
    frame = read_frames(data)[0]
    write_frames(unlabelled, [Frame(frame.numbers, frame.positions, frame.cell, frame.pbc, None, None)])
    with pytest.raises(AdaScaleError, match="REF_forces"):
        invoke("--model", str(setup / "local"), "--model", str(setup / "long"), "--data", str(unlabelled), "--out", out)
    assert not (tmp_path / "x.npz").exists()  # nothing written half-way
