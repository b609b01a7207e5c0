"""Training on a device: the context's device, the float64 refusal on GPUs, and (with a GPU) a run on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import labelled_frames, write_split
from typer.testing import CliRunner

from adascale.cli import app
from adascale.errors import AdaScaleError
from adascale.models.inference import module_forces
from adascale.models.io import WEIGHTS_FILE, load_model
from adascale.training.config import load_config
from adascale.training.distributed import DistributedContext, setup_distributed
from adascale.training.trainer import Trainer
from adascale.units import KJ_MOL_NM_PER_EV_A

FAST = ["model.cutoff=3.0", "model.features=8", "model.interactions=1", "training.warmup_steps=2"]


def test_a_single_process_computes_on_the_device_it_is_given(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = setup_distributed(torch.device("cpu"))
    assert context.device == torch.device("cpu") and context.world_size == 1 and context.is_main
    assert setup_distributed().device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_float64_training_is_refused_on_a_gpu_before_anything_is_built(tmp_path):
    config = load_config("local", [*FAST, "training.dtype=float64"])
    frames = labelled_frames(2)
    with pytest.raises(AdaScaleError, match=r"^float64 on cuda: models run in float32 on GPUs"):
        Trainer(config, frames, frames, tmp_path / "out", context=DistributedContext(device=torch.device("cuda")))
    assert not (tmp_path / "out").exists()


def test_train_on_an_explicit_cpu(tmp_path):
    train, valid = write_split(tmp_path, n_train=3, n_valid=1)
    out = tmp_path / "run"
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(out), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, [*args, *(f"--set={s}" for s in [*FAST, "training.max_steps=2"])])
    assert result.exit_code == 0, result.output
    assert next(load_model(out).parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_saves_a_model_the_cpu_loads_with_the_reported_error(tmp_path):
    train, valid = labelled_frames(6, seed=0), labelled_frames(2, seed=1)
    config = load_config("local", [*FAST, "training.max_epochs=5", "training.learning_rate=0.01"])
    trainer = Trainer(
        config, train, valid, tmp_path, context=DistributedContext(device=torch.device("cuda")), show_progress=False
    )
    assert next(trainer.model.parameters()).device.type == "cuda"
    before = trainer.validate()["mae"]["all"]
    result = trainer.run()
    assert result.best_valid_mae < before
    saved = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)  # tensors come back on the device they were saved from
    assert {value.device.type for value in saved.values()} == {"cpu"}  # so the file loads without a GPU
    model = load_model(tmp_path)  # on the CPU: its validation error is the one measured on the GPU
    forces = module_forces(model, valid, name="reloaded").forces
    mae = np.mean(np.concatenate([np.abs(f - frame.forces).mean(axis=1) for f, frame in zip(forces, valid)]))
    assert mae * KJ_MOL_NM_PER_EV_A == pytest.approx(result.best_valid_mae, rel=1e-4)
