"""Training on stress: the model's training stress is its own strain derivative, the loss lowers the stress
error, and frames without stress train on forces and energy only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_data import labelled_frames

from adascale.deploy.calculator import AdaScaleCalculator
from adascale.models.batch import AtomsBatch
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN
from adascale.training.config import load_config
from adascale.training.tasks import FrameLoss, FrameTask
from adascale.training.trainer import Trainer
from deploy.test_calculator import numeric_stress
from models.branch_checks import SPECIES

FAST = ["model.cutoff=3.0", "model.features=8", "model.interactions=1", "training.warmup_steps=2", "training.dtype=float64"]


def _teacher_stress(frames):
    """The frames with the stress of the teacher PaiNN that labelled them (through the ASE calculator)."""
    torch.manual_seed(1234)
    teacher = PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0).double().eval()
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = AdaScaleCalculator(teacher, dtype="float64")
        frame.stress = atoms.get_stress(voigt=False)
    return frames


def _student(seed: int = 5) -> PaiNN:
    torch.manual_seed(seed)
    return PaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0).double()


def _stress_error(model, frames) -> float:
    """Mean |σ_model - σ_ref| (eV/Å³) through the ASE calculator (independent of the training path)."""
    errors = []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = AdaScaleCalculator(model, dtype="float64")
        errors.append(np.abs(atoms.get_stress(voigt=False) - frame.stress).mean())
    return float(np.mean(errors))


def _long_range(method: str):
    torch.manual_seed(3)
    return LongRangePaiNN(SPECIES, cutoff=3.0, features=8, interactions=1, average_neighbours=5.0, electrostatics=method).double()


@pytest.mark.parametrize(
    "make", [_student, lambda: _long_range("ewald"), lambda: _long_range("pme")], ids=["painn", "ewald", "pme"]
)
def test_the_training_virial_is_the_strain_derivative_of_the_models_energy(make):
    """The virial the model returns beside its forces (cell requiring grad) over the volume equals a finite
    difference of the calculator's energy under strain (local, Ewald and PME energies)."""
    model = make().train()
    frames = labelled_frames(2)
    batch = AtomsBatch.from_frames(frames, model.cutoff, dtype=torch.float64)
    out = model(batch.with_positions(batch.positions, batch.cell.clone().requires_grad_(True)))
    assert out["virial"].requires_grad  # the stress loss can reach the parameters
    for k, frame in enumerate(frames):
        atoms = frame.to_atoms()
        expected = numeric_stress(atoms, model.eval())
        stress = out["virial"][k].detach().numpy() / atoms.get_volume()
        assert np.abs(expected).max() > 1e-4
        np.testing.assert_allclose(stress, expected, atol=1e-8)
        model.train()
    np.testing.assert_allclose(out["forces"].detach(), model.eval()(batch)["forces"], atol=1e-12)  # the same forces
    assert "virial" not in model(batch)  # only when asked


def test_the_stress_loss_receives_gradient_and_lowers_the_stress_error():
    frames = _teacher_stress(labelled_frames(3))
    model = _student().train()
    task = FrameTask(model, frames, frames[:1], FrameLoss(stress_weight=1e4))
    plain = FrameTask(model, frames, frames[:1], FrameLoss())
    items = np.arange(3)
    with_stress, without = task.loss(items)[0], plain.loss(items)[0]
    assert float(with_stress.detach()) > float(without.detach())
    (gradient,) = torch.autograd.grad(with_stress - without, [next(model.parameters())])
    assert float(gradient.abs().sum()) > 0
    before = _stress_error(model, frames)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        task.loss(items)[0].backward()
        optimizer.step()
    assert _stress_error(model, frames) < 0.5 * before


def test_frames_without_stress_train_on_forces_and_energy_only(tmp_path):
    frames = _teacher_stress(labelled_frames(3))
    frames[2].stress = None
    model = _student()
    task = FrameTask(model, frames, frames[:1], FrameLoss(energy_weight=1.0, stress_weight=1e4))
    plain = FrameTask(model, frames, frames[:1], FrameLoss(energy_weight=1.0))
    assert task.loss(np.array([2]))[0] == plain.loss(np.array([2]))[0]  # exactly the energy + force loss
    assert task.loss(np.array([0, 2]))[0] > plain.loss(np.array([0, 2]))[0]
    config = load_config("local", FAST + ["training.max_steps=2", "training.stress_weight=10"])
    trainer = Trainer(config, frames, frames[:1], tmp_path, show_progress=False)
    trainer.run()
    summary = json.loads((tmp_path / "metrics.json").read_text())["stress_training"]
    assert summary == {
        "stress_weight": 10.0,
        "frames": 3,
        "frames_with_stress": 2,
        "note": "frames without stress train on forces and energy only",
    }


@pytest.mark.parametrize("name", ["local", "long_range", "scale_conditioned"])
def test_builtin_configs_train_on_stress(name):
    assert load_config(name).training.stress_weight > 0
