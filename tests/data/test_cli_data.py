"""`adascale data summary`, `adascale data split`, and the one-line errors of `generate nacl`."""

import sys

import numpy as np
import pytest

from adascale.cli import main
from adascale.data.frames import Frame, read_frames, write_frames
from adascale.data.split import split_frames
from adascale.data.summary import summarize_frames
from adascale.errors import AdaScaleError
from adascale.units import KJ_MOL_NM_PER_EV_A


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["adascale", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _contact_frame(shift=0.0):
    """Na-Cl 5 Å apart (close contact), a far Na, a water O 3 Å from the first Na and a lone H far from all ions."""
    numbers = np.array([11, 17, 11, 8, 1])
    positions = np.array([[0, 0, 0], [5, 0, 0], [10, 10, 10], [0, 3, 0], [15, 15, 15]], dtype=float) + shift
    forces = np.array([[1, -1, 0], [2, 0, 0], [0, 0, 3], [0.5, 0.5, 0.5], [0, 0, 0]], dtype=float)
    return Frame(numbers, positions, np.eye(3) * 20.0, np.array([True] * 3), forces, -1.0 - shift)


def test_summary_figures_by_hand():
    s = summarize_frames([_contact_frame(), _contact_frame(0.1)])
    assert s["frames"] == 2 and s["atoms"] == 10 and s["atoms_per_frame"] == (5, 5)
    assert {z: row["atoms"] for z, row in s["species"].items()} == {1: 2, 8: 2, 11: 4, 17: 2}
    na = s["species"][11]  # |components| 1,1,0 and 0,0,3 per frame
    assert na["mean_abs_component"] == pytest.approx(5 / 6 * KJ_MOL_NM_PER_EV_A)
    assert na["max_norm"] == pytest.approx(3 * KJ_MOL_NM_PER_EV_A)
    assert s["fraction_atoms_near_ion"] == pytest.approx(3 / 5)  # Na, Cl of the pair and the O
    assert s["fraction_ions_close_contact"] == pytest.approx(2 / 3)
    assert s["energy_per_atom_ev"][0] == pytest.approx((-1.0 - 1.1) / 2 / 5)


def test_summary_command_prints_the_figures(tmp_path, monkeypatch, capsys):
    write_frames(tmp_path / "c.extxyz", [_contact_frame()])
    code, out, _ = _run(monkeypatch, capsys, "data", "summary", str(tmp_path / "c.extxyz"))
    assert code == 0
    assert "1 frames, 5 atoms per frame" in out
    assert "atoms within 0.6 nm of an ion: 60.0%" in out
    assert "66.7% of 3" in out
    assert f"{2 / 3 * KJ_MOL_NM_PER_EV_A:.1f}" in out  # Cl mean |F_x|


def test_summary_of_a_bad_file_is_one_error_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty.extxyz").write_text("")
    code, out, err = _run(monkeypatch, capsys, "data", "summary", str(tmp_path / "empty.extxyz"))
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'empty.extxyz'}: file is empty"


def test_split_frames_in_contiguous_blocks():
    frames = [_contact_frame(k) for k in range(6)]
    train, valid, test = split_frames(frames, [3, 1, 1])
    assert [f.energy for f in train + valid + test] == [f.energy for f in frames[:5]]
    assert [len(b) for b in (train, valid, test)] == [3, 1, 1]
    with pytest.raises(AdaScaleError, match=r"split sizes \[4, 1, 2\] add up to 7 frames but there are only 6"):
        split_frames(frames, [4, 1, 2])
    with pytest.raises(AdaScaleError, match="must not be negative"):
        split_frames(frames, [4, -1, 2])


def test_split_command_writes_train_valid_test(tmp_path, monkeypatch, capsys):
    frames = [_contact_frame(k * 0.1) for k in range(7)]
    write_frames(tmp_path / "all.extxyz", frames, info={"gen_seed": 5})
    code, out, _ = _run(
        monkeypatch,
        capsys,
        "data",
        "split",
        str(tmp_path / "all.extxyz"),
        "--sizes",
        "3,2,1",
        "--out-dir",
        str(tmp_path / "split"),
    )
    assert code == 0 and "(1 left out)" in out
    parts = {name: read_frames(tmp_path / "split" / f"{name}.extxyz") for name in ("train", "valid", "test")}
    assert [f.energy for name in ("train", "valid", "test") for f in parts[name]] == [f.energy for f in frames[:6]]
    assert parts["test"][0].info["gen_seed"] == 5  # provenance survives the split


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ("3,2", "needs three numbers"),
        ("a,b,c", "must be three integers"),
        ("5,2,1", "add up to 8 frames but there are only 7"),
        ("6,0,1", "at least one frame"),
    ],
)
def test_split_command_errors(tmp_path, monkeypatch, capsys, sizes, match):
    write_frames(tmp_path / "all.extxyz", [_contact_frame(k * 0.1) for k in range(7)])
    code, _, err = _run(
        monkeypatch, capsys, "data", "split", str(tmp_path / "all.extxyz"), "--sizes", sizes, "--out-dir", str(tmp_path / "s")
    )
    assert code == 2 and match in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()  # nothing written half-way


def test_generate_rejects_bad_settings_with_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = _run(monkeypatch, capsys, "generate", "nacl", "--box-nm", "1.5", "--out", str(tmp_path / "x.extxyz"))
    assert code == 2
    assert err.startswith("error: --box-nm 1.5 is too small") and err.count("\n") == 1
    assert not (tmp_path / "x.extxyz").exists()
