"""Saving and loading branches: round trip, atomic files, and clear errors for bad directories."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from branch_checks import SPECIES, evaluate, water_ion_frame

from adascale.errors import AdaScaleError
from adascale.models.io import CONFIG_FILE, WEIGHTS_FILE, build_branch, load_branch, read_branch_config, save_branch
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN


@pytest.mark.parametrize("cls", [PaiNN, LongRangePaiNN])
def test_round_trip_gives_identical_predictions(tmp_path, cls):
    torch.manual_seed(0)
    branch = cls(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=5.0).eval()
    branch.set_energy_statistics([0.1, -0.2, 0.3, -0.4], 0.7)
    save_branch(tmp_path, branch, {"training": {"seed": 3}})
    loaded = load_branch(tmp_path)
    assert type(loaded) is cls and loaded.config() == branch.config()
    assert read_branch_config(tmp_path)["training"] == {"seed": 3}
    frame = water_ion_frame(6, 1, 7.0, seed=0)
    assert torch.equal(evaluate(loaded.double(), [frame])["forces"], evaluate(branch.double(), [frame])["forces"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files left


def test_missing_and_corrupt_directories_are_clear_errors(tmp_path):
    with pytest.raises(AdaScaleError, match="not a model directory"):
        load_branch(tmp_path / "nothing")
    save_branch(tmp_path, PaiNN(SPECIES, features=8, interactions=1))
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        load_branch(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(AdaScaleError, match="corrupt model config"):
        load_branch(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_in_weights_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_branch(tmp_path, PaiNN(SPECIES, features=8, interactions=1))
    (tmp_path / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": _Exploit()}))
    with pytest.raises(AdaScaleError):
        load_branch(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_kind_and_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(AdaScaleError, match="unknown branch kind"):
        build_branch({"kind": "transformer", "species": [1]})
    with pytest.raises(AdaScaleError, match="invalid settings"):
        build_branch({"kind": "painn", "species": [1], "colour": "red"})
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"branch": {"kind": "painn", "species": [1], "cutoff": -1}}))
    with pytest.raises(AdaScaleError, match="cutoff must be positive"):
        load_branch(tmp_path)
