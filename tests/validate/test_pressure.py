"""The molecular pressure check: the model's against a finite difference of its own energy with rigid molecules."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from adascale.deploy.potential import Potential
from adascale.errors import AdaScaleError
from adascale.units import BAR_PER_EV_A3
from adascale.validate.pressure import centre_offsets, pressure_check
from deploy.tiny_models import make_branches
from models.branch_checks import water_ion_frame


@pytest.fixture(scope="module")
def frame():
    frame = water_ion_frame(20, 2, 9.0, seed=3)
    frame.stress = np.zeros((3, 3))
    return frame


def test_the_models_molecular_pressure_is_minus_the_volume_derivative_with_rigid_molecules(frame):
    """Scaling molecule centres (molecules rigid, as the barostat does) by 1 ± h: P = −ΔE/ΔV."""
    potential = Potential(make_branches()[1], dtype="float64", skin=0.0)  # the long-range branch: Ewald + local
    whole, offsets = centre_offsets(frame)
    centres = whole - offsets

    def energy(scale: float) -> float:
        moved = centres * scale + offsets
        return potential.compute(frame.numbers, moved, frame.cell * scale, frame.pbc).energy

    h, volume = 1e-4, abs(np.linalg.det(frame.cell))
    finite = -(energy(1 + h) - energy(1 - h)) / (volume * ((1 + h) ** 3 - (1 - h) ** 3)) * BAR_PER_EV_A3
    check = pressure_check(potential, [frame])
    assert check["model"][0] == pytest.approx(finite, rel=1e-5, abs=1e-3)
    assert abs(finite) > 10  # a real pressure, not a vanishing one


class Echo:
    """A 'model' returning the frame's own labels, shifted by a constant isotropic stress."""

    def __init__(self, frame, shift: float) -> None:
        self.frame, self.shift = frame, shift

    def compute(self, numbers, positions, cell, pbc, *, stress=False):
        return SimpleNamespace(stress=self.frame.stress + self.shift * np.eye(3), forces=self.frame.forces)


def test_labels_against_themselves_differ_by_zero_and_a_shift_shows_with_its_sign(frame):
    frame.stress = np.diag([0.001, 0.002, -0.0005])
    assert pressure_check(Echo(frame, 0.0), [frame, frame])["difference"]["mean"] == pytest.approx(0.0, abs=1e-9)
    shifted = pressure_check(Echo(frame, 1e-4), [frame, frame])["difference"]
    assert shifted["mean"] == pytest.approx(-1e-4 * BAR_PER_EV_A3) and shifted["sem"] == pytest.approx(0.0, abs=1e-9)


def test_frames_without_stress_are_refused_in_one_line(frame):
    no_stress = water_ion_frame(20, 2, 9.0, seed=3)
    no_stress.stress = None
    with pytest.raises(AdaScaleError, match="frame 0: no reference stress") as error:
        pressure_check(Echo(frame, 0.0), [no_stress], where="test.extxyz")
    assert "\n" not in str(error.value) and "test.extxyz" in str(error.value)
