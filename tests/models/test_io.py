"""The one model format: every kind round-trips, atomic files, and clear one-line errors for every bad directory."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from branch_checks import SPECIES, evaluate, water_ion_frame

from adascale.errors import AdaScaleError
from adascale.models.io import (
    MODEL_FILE,
    MODEL_KINDS,
    VERSION,
    WEIGHTS_FILE,
    build_model,
    initialise_from,
    load_model,
    read_model_info,
    save_model,
)
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN
from adascale.models.router import RouterModel


@pytest.mark.parametrize("cls", [PaiNN, LongRangePaiNN])
def test_round_trip_gives_identical_predictions(tmp_path, cls):
    torch.manual_seed(0)
    branch = cls(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=5.0).double().eval()
    branch.set_energy_statistics([0.1, -0.2, 0.3, -0.4], 0.7)
    save_model(tmp_path, branch, {"training": {"seed": 3}})
    loaded = load_model(tmp_path)
    assert type(loaded) is cls and loaded.config() == branch.config()
    assert next(loaded.parameters()).dtype == torch.float64  # the saved precision is kept
    info = read_model_info(tmp_path)
    assert (info["format"], info["version"], info["kind"]) == ("adascale-model", VERSION, cls.kind)
    assert info["metadata"] == {"training": {"seed": 3}} and "kind" not in info["config"]
    frame = water_ion_frame(6, 1, 7.0, seed=0)
    assert torch.equal(evaluate(loaded, [frame])["forces"], evaluate(branch, [frame])["forces"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILE, WEIGHTS_FILE]  # no temp files left


@pytest.mark.parametrize("cls", [PaiNN, LongRangePaiNN])
def test_a_float32_branch_reloads_in_float32_and_evaluates_identically_in_float64(tmp_path, cls):
    """As the calculator does with dtype=float64: the reloaded model's constants (torch-pme's
    prefactors included) must be the original's, not rounded through float32."""
    torch.manual_seed(0)
    branch = cls(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=5.0).eval()
    save_model(tmp_path, branch)
    loaded = load_model(tmp_path)
    assert next(loaded.parameters()).dtype == torch.float32
    state, reloaded_state = branch.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[key], reloaded_state[key]) for key in state)
    frame = water_ion_frame(6, 1, 7.0, seed=0)
    assert torch.equal(evaluate(loaded.double(), [frame])["forces"], evaluate(branch.double(), [frame])["forces"])


def test_every_registered_kind_round_trips(tmp_path):
    from deploy.tiny_models import make_mixture

    assert set(MODEL_KINDS) >= {"painn", "painn_long_range", "adaptive_mixture", "router"}
    router = RouterModel(5, 3, (4,), routing={"kind": "hard", "pool": [0.0, 0.5, 1.0]})
    for model in (make_mixture(), router):
        save_model(tmp_path / model.kind, model)
        loaded = load_model(tmp_path / model.kind)
        assert type(loaded) is type(model) and loaded.config() == model.config()
        state, again = model.state_dict(), loaded.state_dict()
        assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)


@pytest.mark.parametrize(
    ("old_file", "command"),
    [("branch.json", "adascale train"), ("mixture.json", "adascale mixture"), ("router.json", "adascale route")],
)
def test_old_format_directories_are_refused_with_what_to_do(tmp_path, old_file, command):
    (tmp_path / old_file).write_text(json.dumps({"branch": {"kind": "painn", "species": [1]}}))
    torch.save({}, tmp_path / WEIGHTS_FILE)
    with pytest.raises(AdaScaleError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert "\n" not in message and old_file in message and "old unversioned format" in message
    assert f"retrain it ({command})" in message


def test_unknown_version_kind_and_run_directories_are_refused(tmp_path):
    save_model(tmp_path / "m", PaiNN(SPECIES, features=8, interactions=1))
    info = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(info | {"version": 3}))
    with pytest.raises(AdaScaleError, match=r"model format version 3, but this adascale reads version 2; retrain"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(info | {"kind": "transformer"}))
    with pytest.raises(AdaScaleError, match=r"unknown model kind 'transformer' \(this adascale knows painn, .*retrain"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps({k: v for k, v in info.items() if k != "format"}))
    with pytest.raises(AdaScaleError, match="not an adascale model file"):
        load_model(tmp_path / "m")
    run = tmp_path / "run"
    (run / ".stages").mkdir(parents=True)
    (run / "mixture.json").write_text("{}")  # a run's mixture report is not an old mixture directory
    with pytest.raises(AdaScaleError, match=r"this is a run directory .*AdaScaleCalculator.from_run"):
        load_model(run)


def test_missing_and_corrupt_directories_are_clear_errors(tmp_path):
    with pytest.raises(AdaScaleError, match="not a model directory"):
        load_model(tmp_path / "nothing")
    save_model(tmp_path, PaiNN(SPECIES, features=8, interactions=1))
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with pytest.raises(AdaScaleError, match="corrupt or incompatible weights"):
        load_model(tmp_path)
    (tmp_path / MODEL_FILE).write_text("{")
    with pytest.raises(AdaScaleError, match="corrupt model file"):
        load_model(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_code_in_weights_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(tmp_path, PaiNN(SPECIES, features=8, interactions=1))
    (tmp_path / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": _Exploit()}))
    with pytest.raises(AdaScaleError):
        load_model(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_kind_and_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(AdaScaleError, match="unknown model kind"):
        build_model({"kind": "transformer", "species": [1]})
    with pytest.raises(AdaScaleError, match="invalid settings"):
        build_model({"kind": "painn", "species": [1], "colour": "red"})
    save_model(tmp_path, PaiNN(SPECIES, features=8, interactions=1))
    info = json.loads((tmp_path / MODEL_FILE).read_text())
    info["config"]["cutoff"] = -1
    (tmp_path / MODEL_FILE).write_text(json.dumps(info))
    with pytest.raises(AdaScaleError, match="cutoff must be positive"):
        load_model(tmp_path)


def test_init_from_copies_a_saved_model_and_a_mixture_starts_from_its_anchors(tmp_path):
    from deploy.tiny_models import make_branches, make_mixture

    torch.manual_seed(1)
    source = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1).double()
    save_model(tmp_path / "source", source)
    torch.manual_seed(2)
    target = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1).double()
    assert not torch.equal(target.state_dict()["readout.0.weight"], source.state_dict()["readout.0.weight"])
    initialise_from(target, tmp_path / "source")
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))

    anchors = make_branches(seed=5)
    for k, branch in enumerate(anchors):
        save_model(tmp_path / f"anchor{k}", branch)
    mixture = make_mixture(seed=0)  # branches from seed 0: different weights
    router_before = {k: v.clone() for k, v in mixture.router.state_dict().items()}
    initialise_from(mixture, [tmp_path / "anchor0", tmp_path / "anchor1"])
    for branch, anchor in zip(mixture.branches, anchors):
        assert all(torch.equal(a, b) for a, b in zip(branch.state_dict().values(), anchor.state_dict().values()))
    assert all(torch.equal(router_before[k], v) for k, v in mixture.router.state_dict().items())  # the router is untouched
    with pytest.raises(AdaScaleError, match="do not fit"):
        initialise_from(mixture, {"branches.0": tmp_path / "anchor1"})  # a long-range branch into the local slot
    with pytest.raises(AdaScaleError, match="1 directories given, but the model has 2 branches"):
        initialise_from(mixture, [tmp_path / "anchor0"])
