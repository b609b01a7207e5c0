"""PredictionSet: round trip through .npz, validation of malformed sets, subsets, frame groups."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adascale.errors import AdaScaleError
from adascale.predictions import PredictionSet, frame_groups


def make_arrays(n: int = 12, k: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "ref": rng.normal(size=(n, 3)),
        "pred": rng.normal(size=(k, n, 3)),
        "scales": PredictionSet.default_scales(k),
        "species": np.array([11, 17, 8, 1] * (n // 4)),
        "frame": np.repeat(np.arange(n // 4), 4),
        "atom": np.tile(np.arange(4), n // 4),
        "d_ion": np.array([0.3, 0.3, 0.7, 0.9] * (n // 4)),
        "branch_names": [f"b{i}" for i in range(k)],
    }


def save_raw(path, arrays: dict) -> None:
    """Write an .npz the way PredictionSet.save lays it out, without its validation."""
    raw = {key: value for key, value in arrays.items() if key != "branch_names"}
    raw["branch_names"] = np.array(json.dumps(arrays["branch_names"]))
    raw.setdefault("metadata", np.array(json.dumps({})))
    np.savez(path, **raw)


def test_round_trip_keeps_every_field(tmp_path):
    arrays = make_arrays(k=3)
    features = np.arange(12 * 5, dtype=float).reshape(12, 5)
    per_branch = np.ones((3, 12, 2))
    ps = PredictionSet(
        **arrays, metadata={"close_contact_nm": 0.5, "note": "x"}, extras={"features": features, "latent": per_branch}
    )
    path = tmp_path / "sub" / "pred.npz"
    ps.save(path)
    back = PredictionSet.load(path)
    for name in ("ref", "pred", "scales", "species", "frame", "atom", "d_ion"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ps, name))
    assert back.branch_names == ["b0", "b1", "b2"]
    assert back.metadata == {"ion_species": [11, 17], "close_contact_nm": 0.5, "note": "x"}
    np.testing.assert_array_equal(back.extras["features"], features)
    np.testing.assert_array_equal(back.extras["latent"], per_branch)
    assert (back.K, back.N) == (3, 12)
    assert [p.name for p in path.parent.iterdir()] == ["pred.npz"]  # no temp file left behind


def test_masks_follow_metadata():
    arrays = make_arrays()
    default = PredictionSet(**arrays).masks()
    assert default["ions"].sum() == 6 and default["close_contact"].sum() == 6
    tight = PredictionSet(**arrays, metadata={"close_contact_nm": 0.25}).masks()
    assert tight["close_contact"].sum() == 0
    sodium_only = PredictionSet(**arrays, metadata={"ion_species": [11]}).masks()
    assert sodium_only["ions"].sum() == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: a.update(ref=a["ref"][:, :2]), "ref"),
        (lambda a: a.update(pred=a["pred"][:, :-1]), "pred"),
        (lambda a: a.update(pred=a["pred"][:1]), "pred"),
        (lambda a: a.update(scales=np.array([0.0, 0.5, 1.0])), "scales"),
        (lambda a: a.update(scales=np.array([0.2, 1.0])), "scales"),
        (lambda a: a.update(scales=np.array([1.0, 0.0])), "scales"),
        (lambda a: a.update(branch_names=["only_one"]), "branch_names"),
        (lambda a: a.update(species=a["species"][:-1]), "species"),
        (lambda a: a.update(frame=a["frame"].astype(float)), "frame"),
        (lambda a: a["ref"].__setitem__((3, 1), np.nan), "ref"),
        (lambda a: a["pred"].__setitem__((1, 2, 0), np.inf), "pred"),
        (lambda a: a["d_ion"].__setitem__(0, -1.0), "d_ion"),
        (lambda a: a.update(ref=np.zeros((0, 3)), pred=np.zeros((2, 0, 3))), "ref"),
    ],
)
def test_malformed_sets_name_file_and_field(tmp_path, change, field):
    arrays = make_arrays()
    change(arrays)
    path = tmp_path / "bad.npz"
    save_raw(path, arrays)
    with pytest.raises(AdaScaleError) as info:
        PredictionSet.load(path)
    message = str(info.value)
    assert str(path) in message and f"field {field!r}" in message
    assert "\n" not in message


def test_missing_field_corrupt_file_and_absent_file(tmp_path):
    arrays = make_arrays()
    del arrays["d_ion"]
    save_raw(tmp_path / "missing.npz", arrays)
    with pytest.raises(AdaScaleError, match="field 'd_ion': missing"):
        PredictionSet.load(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    with pytest.raises(AdaScaleError, match="not a readable .npz"):
        PredictionSet.load(tmp_path / "corrupt.npz")
    with pytest.raises(AdaScaleError, match="no such prediction set"):
        PredictionSet.load(tmp_path / "absent.npz")


def test_nan_distance_is_allowed_where_a_frame_has_no_ion():
    arrays = make_arrays()
    arrays["d_ion"][:4] = np.nan
    ps = PredictionSet(**arrays)
    assert not ps.masks()["close_contact"][:4].any()


def test_extras_must_be_per_sample():
    with pytest.raises(AdaScaleError, match="extra__bad"):
        PredictionSet(**make_arrays(), extras={"bad": np.zeros(5)})


def test_default_scales():
    np.testing.assert_allclose(PredictionSet.default_scales(3), [0.0, 0.5, 1.0])
    with pytest.raises(AdaScaleError):
        PredictionSet.default_scales(1)


@pytest.mark.parametrize("frame", [np.array([3, 3, 5, 5, 5, 9]), np.array([5, 3, 5, 9, 3, 5])])
def test_frame_groups_are_dense_and_consistent(frame):
    groups, n = frame_groups(frame)
    assert n == 3 and set(groups.tolist()) == {0, 1, 2}
    for a in range(len(frame)):
        for b in range(len(frame)):
            assert (groups[a] == groups[b]) == (frame[a] == frame[b])


def foreign_arrays(**metadata_and_names) -> dict:
    """The arrays another tool would write with plain numpy.savez: no adascale helper involved."""
    arrays = make_arrays(n=16)
    arrays.pop("branch_names")
    arrays["branch_names"] = np.array(json.dumps(["short", "long"]))
    arrays.update(metadata_and_names)
    return arrays


@pytest.mark.parametrize(
    ("case", "arrays", "ions", "defaults"),
    [
        ("no metadata", foreign_arrays(), [11, 17], ["ion_species", "close_contact_nm"]),
        ("string array of names", foreign_arrays(branch_names=np.array(["short", "long"])), [11, 17], None),
        ("symbols", foreign_arrays(metadata=np.array(json.dumps({"ion_species": ["Na", "Cl"]}))), [11, 17], ["close_contact_nm"]),
        (
            "mixed",
            foreign_arrays(metadata=np.array(json.dumps({"ion_species": ["Cl", 11], "close_contact_nm": 0.5}))),
            [17, 11],
            [],
        ),
    ],
)
def test_sets_from_other_tools_load_and_analyze(tmp_path, case, arrays, ions, defaults):
    from adascale.scales.analysis import analyze

    path = tmp_path / "foreign.npz"
    np.savez(path, **arrays)
    ps = PredictionSet.load(path)
    assert ps.branch_names == ["short", "long"], case
    assert ps.metadata["ion_species"] == ions
    assert ps.masks()["ions"].sum() == 8  # the Na and Cl of each 4-atom frame, however they were named
    subsets = analyze(ps, n_resamples=20)["settings"]["subsets"]
    assert subsets["ion_species"] == ions and subsets["ion_symbols"] == [{11: "Na", 17: "Cl"}[z] for z in ions]
    if defaults is not None:
        assert subsets["defaults"] == defaults


def test_analyze_says_which_subset_defaults_it_used(tmp_path):
    from typer.testing import CliRunner

    from adascale.cli import app

    np.savez(tmp_path / "foreign.npz", **foreign_arrays())
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "foreign.npz"), "--bootstrap", "10"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (
        "ions: Na, Cl; close contact: nearest other ion < 0.6 nm (default ion species and close-contact distance" in result.output
    )
    result = CliRunner().invoke(app, ["refine", str(tmp_path / "foreign.npz"), "--bootstrap", "10"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "(default ion species and close-contact distance" in result.output


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (foreign_arrays(branch_names=np.array("short")), "field 'branch_names': is not valid JSON"),
        (foreign_arrays(branch_names=np.array(json.dumps({"a": 1}))), "field 'branch_names': must be a JSON list of strings"),
        (foreign_arrays(branch_names=np.array([1, 2])), "field 'branch_names': expected a JSON string"),
        (foreign_arrays(branch_names=np.array(["only"])), "field 'branch_names': expected 2 names"),
        (foreign_arrays(metadata=np.array("{")), "field 'metadata': is not valid JSON"),
        (foreign_arrays(metadata=np.array(json.dumps([1]))), "field 'metadata': must be a JSON object"),
        (foreign_arrays(metadata=np.array(json.dumps({"ion_species": ["Xx"]}))), "'Xx' is neither an element symbol"),
        (foreign_arrays(metadata=np.array(json.dumps({"ion_species": [0]}))), "0 is neither an element symbol"),
        (foreign_arrays(metadata=np.array(json.dumps({"ion_species": []}))), "field 'metadata': ion_species must be a non-empty"),
        (foreign_arrays(metadata=np.array(json.dumps({"close_contact_nm": "0.6"}))), "close_contact_nm must be a positive"),
        (foreign_arrays(metadata=np.array(json.dumps({"close_contact_nm": -1}))), "close_contact_nm must be a positive"),
    ],
)
def test_lenient_fields_still_refuse_nonsense_in_one_line(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(AdaScaleError) as info:
        PredictionSet.load(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text
