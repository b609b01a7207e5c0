"""Tiny labelled data sets for training tests: small water/ion boxes labelled by a fixed random teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adascale.data.frames import Frame, write_frames
from adascale.models.batch import AtomsBatch
from adascale.models.painn import PaiNN
from models.branch_checks import SPECIES, water_ion_frame


def labelled_frames(n: int, seed: int = 0) -> list[Frame]:
    """``n`` periodic frames (5 waters + 1 ion pair, 7 Å box) with forces and energies of a teacher PaiNN."""
    torch.manual_seed(1234)
    teacher = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0).double().eval()
    frames = []
    for k in range(n):
        frame = water_ion_frame(5, 1, 7.0, seed=seed * 1000 + k)
        out = teacher(AtomsBatch.from_frames([frame], 3.0, dtype=torch.float64))
        frame.forces = out["forces"].numpy()
        frame.energy = float(out["energy"])
        frames.append(frame)
    return frames


def write_split(directory: Path, n_train: int = 6, n_valid: int = 2) -> tuple[Path, Path]:
    """train.extxyz and valid.extxyz in ``directory``."""
    train, valid = directory / "train.extxyz", directory / "valid.extxyz"
    write_frames(train, labelled_frames(n_train, seed=0))
    write_frames(valid, labelled_frames(n_valid, seed=1))
    return train, valid


def truncated_forces_calculator():
    """An ASE calculator that returns one force row too few (for 'mismatched frames' errors)."""
    from ase.calculators.calculator import Calculator, all_changes

    class Truncated(Calculator):
        implemented_properties = ["forces", "energy"]

        def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"forces": np.zeros((len(atoms) - 1, 3)), "energy": 0.0}

    return Truncated()
