import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from adascale.data.frames import Frame, check_cutoff, periodic_widths, read_frames, write_frames
from adascale.errors import AdaScaleError


def _water_atoms(rng, n_molecules=3, cell=8.0):
    atoms = ase.Atoms("OH2" * n_molecules, positions=rng.uniform(0, cell, (3 * n_molecules, 3)), cell=[cell] * 3, pbc=True)
    return atoms


def _labelled(rng, **kwargs):
    atoms = _water_atoms(rng, **kwargs)
    atoms.arrays["REF_forces"] = rng.normal(size=(len(atoms), 3))
    atoms.info["REF_energy"] = float(rng.normal())
    return atoms


def test_write_then_read_round_trips_frames_and_info(tmp_path, rng):
    cell = np.array([[7.0, 0, 0], [1.5, 6.5, 0], [-0.7, 1.1, 7.2]])
    frames = [
        Frame(
            np.array([8, 1, 1, 11]),
            rng.uniform(0, 6, (4, 3)),
            cell,
            np.array([True] * 3),
            rng.normal(size=(4, 3)),
            -12.345678901234,
        )
        for _ in range(3)
    ]
    path = tmp_path / "sub" / "frames.extxyz"
    write_frames(path, frames, info={"seed": 3, "generator": "test"})
    back = read_frames(path)
    assert len(back) == 3
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)  # extxyz keeps 8 decimals
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-8)
        np.testing.assert_allclose(b.cell, a.cell, atol=1e-12)
        assert b.pbc.tolist() == [True] * 3
        assert b.energy == a.energy
        assert b.numbers.dtype == np.int64 and b.positions.dtype == np.float64
        assert b.info["seed"] == 3 and b.info["generator"] == "test"
        assert "REF_energy" not in b.info
    assert [p.name for p in path.parent.iterdir()] == ["frames.extxyz"]  # no temp file left behind


def test_unlabelled_molecule_round_trips(tmp_path, rng):
    frame = Frame(np.array([6, 1]), rng.normal(size=(2, 3)), np.zeros((3, 3)), np.zeros(3, bool), None, None)
    write_frames(tmp_path / "m.extxyz", [frame])
    (back,) = read_frames(tmp_path / "m.extxyz", require_forces=False)
    assert back.forces is None and back.energy is None and not back.pbc.any()
    with pytest.raises(AdaScaleError, match=r"m\.extxyz: frame 0: field 'REF_forces': no forces found"):
        read_frames(tmp_path / "m.extxyz")


def test_falls_back_to_plain_forces_and_energy_of_a_calculator(tmp_path, rng):
    atoms = _water_atoms(rng)
    forces = rng.normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, forces=forces, energy=-3.5)
    ase.io.write(tmp_path / "calc.db", atoms)  # an ASE database, not extxyz
    (frame,) = read_frames(tmp_path / "calc.db")
    np.testing.assert_allclose(frame.forces, forces)
    assert frame.energy == -3.5


def test_custom_keys(tmp_path, rng):
    atoms = _water_atoms(rng)
    atoms.arrays["dft_f"] = np.ones((len(atoms), 3))
    atoms.info["dft_e"] = 2.0
    ase.io.write(tmp_path / "c.extxyz", atoms)
    (frame,) = read_frames(tmp_path / "c.extxyz", forces_key="dft_f", energy_key="dft_e")
    assert frame.forces.sum() == 3 * len(atoms) and frame.energy == 2.0


def test_missing_forces_lists_the_keys_present(tmp_path, rng):
    atoms = _water_atoms(rng)
    atoms.arrays["my_forces"] = np.zeros((len(atoms), 3))
    atoms.info["my_energy"] = 1.0
    ase.io.write(tmp_path / "x.extxyz", [_labelled(rng), atoms])
    with pytest.raises(AdaScaleError) as err:
        read_frames(tmp_path / "x.extxyz")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'x.extxyz'}: frame 1: field 'REF_forces': no forces found")
    assert "my_forces" in message and "my_energy" in message and "\n" not in message


@pytest.mark.parametrize(
    ("field", "where", "match"),
    [
        ("REF_forces", "arrays", r"frame 1: field 'REF_forces': contains NaN or inf \(first at \(2, 1\)\)"),
        ("REF_energy", "info", r"frame 1: field 'REF_energy': is NaN or inf"),
        ("positions", "arrays", r"frame 1: field 'positions': contains NaN or inf"),
    ],
)
def test_nan_or_inf_is_refused(tmp_path, rng, field, where, match):
    bad = _labelled(rng)
    if where == "arrays":
        bad.arrays[field][2, 1] = np.inf if field == "positions" else np.nan
    else:
        bad.info[field] = float("nan")
    ase.io.write(tmp_path / "bad.extxyz", [_labelled(rng), bad])
    with pytest.raises(AdaScaleError, match=match):
        read_frames(tmp_path / "bad.extxyz")


def test_wrong_force_shape_is_refused(tmp_path, rng):
    atoms = _water_atoms(rng)
    atoms.arrays["REF_forces"] = np.zeros((len(atoms), 2))
    ase.io.write(tmp_path / "shape.extxyz", atoms)
    with pytest.raises(AdaScaleError, match=r"frame 0: field 'REF_forces': has shape \(9, 2\), expected \(9, 3\)"):
        read_frames(tmp_path / "shape.extxyz")


def test_empty_missing_and_unreadable_files(tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(AdaScaleError, match=r"empty\.extxyz: file is empty"):
        read_frames(tmp_path / "empty.extxyz")
    with pytest.raises(AdaScaleError, match=r"nope\.extxyz: file not found"):
        read_frames(tmp_path / "nope.extxyz")
    (tmp_path / "junk.extxyz").write_text("3\nnot a header\nH 0 0\n")
    with pytest.raises(AdaScaleError, match=r"junk\.extxyz: cannot read frames") as err:
        read_frames(tmp_path / "junk.extxyz")
    assert "\n" not in str(err.value)


def test_periodic_axis_with_zero_lattice_vector_is_refused(tmp_path, rng):
    atoms = _labelled(rng)
    atoms.cell[1] = 0.0
    ase.io.write(tmp_path / "flat.extxyz", atoms)
    with pytest.raises(AdaScaleError, match=r"frame 0: field 'cell': periodic along abc but the cell has a zero lattice vector"):
        read_frames(tmp_path / "flat.extxyz")


def test_periodic_widths_of_triclinic_slab_and_wire():
    cell = np.array([[4.0, 0, 0], [2.0, 5.0, 0], [1.0, 1.0, 6.0]])
    volume = abs(np.linalg.det(cell))
    expected = [volume / np.linalg.norm(np.cross(cell[1], cell[2])), volume / np.linalg.norm(np.cross(cell[2], cell[0])), 6.0]
    np.testing.assert_allclose(periodic_widths(cell, np.array([True] * 3)), expected)
    # a slab periodic along a and b: the widths of the 2-d lattice (the third vector is ignored)
    np.testing.assert_allclose(periodic_widths(cell, np.array([True, True, False])), [4.0 * 5.0 / np.hypot(2, 5), 5.0])
    np.testing.assert_allclose(periodic_widths(cell, np.array([False, True, False])), [np.hypot(2, 5)])


def test_check_cutoff_enforces_twice_the_cutoff(rng):
    cell = np.array([[10.0, 0, 0], [3.0, 9.0, 0], [0, 0, 12.0]])  # narrowest width: 9 Å along b
    frame = Frame(np.array([1]), np.zeros((1, 3)), cell, np.array([True] * 3), None, None)
    check_cutoff(frame, 4.5)
    with pytest.raises(
        AdaScaleError, match=r"f\.xyz: frame 4: field 'cell': cell too small for cutoff 4\.6 Å: width 9\.000 Å along b"
    ):
        check_cutoff(frame, 4.6, path="f.xyz", index=4)
    frame.pbc = np.array([True, False, True])  # b is no longer periodic: a's width is now its full length
    check_cutoff(frame, 5.0)
    molecule = Frame(np.array([1]), np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool), None, None)
    check_cutoff(molecule, 100.0)


def test_stress_round_trips_and_reads_voigt_and_the_plain_key(tmp_path):
    stress = np.array([[1.0, 0.4, 0.5], [0.4, 2.0, 0.6], [0.5, 0.6, 3.0]]) * 1e-3
    frame = Frame(
        np.array([8, 1]), np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.eye(3) * 5, np.ones(3, bool), np.ones((2, 3)), -1.0
    )
    unlabelled = Frame(frame.numbers, frame.positions, frame.cell, frame.pbc, frame.forces, -1.0)
    frame.stress = stress
    write_frames(tmp_path / "s.extxyz", [frame, unlabelled])
    back = read_frames(tmp_path / "s.extxyz")
    np.testing.assert_array_equal(back[0].stress, stress)
    assert back[1].stress is None and "REF_stress" not in back[0].info
    atoms = frame.to_atoms()
    del atoms.info["REF_stress"]
    atoms.calc = SinglePointCalculator(atoms, stress=[1e-3, 2e-3, 3e-3, 0.6e-3, 0.5e-3, 0.4e-3])  # ASE's Voigt order
    np.testing.assert_allclose(Frame.from_atoms(atoms).stress, stress)
    atoms.calc = None
    atoms.info["my_stress"] = np.ones(4)
    with pytest.raises(AdaScaleError, match=r"frame 0.*my_stress.*has shape \(4,\), expected \(3, 3\)"):
        Frame.from_atoms(atoms, stress_key="my_stress", index=0, path="x.extxyz")
