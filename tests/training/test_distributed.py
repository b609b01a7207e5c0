"""Data-parallel training: 2 CPU processes under torchrun (gloo, DDP) equal one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_data import write_split

from adascale.data.frames import read_frames
from adascale.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from adascale.training.config import load_config
from adascale.training.trainer import Trainer

pytestmark = pytest.mark.integration  # training in two torchrun processes

SETTINGS = [
    "model.cutoff=3.0",
    "model.features=8",
    "model.interactions=2",
    "training.dtype=float64",
    "training.batch_size=2",
    "training.max_epochs=2",
    "training.learning_rate=0.01",
    "training.warmup_steps=1",
]


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    train, valid = write_split(tmp_path, n_train=6, n_valid=3)
    adascale = str(Path(sys.executable).parent / "adascale")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        adascale,
        "train",
        "--config",
        "local",
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(tmp_path / "ddp"),
        "--quiet",
        *sum((["--set", s] for s in SETTINGS), []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on a shared 2-core machine: no oversubscription
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    frames = read_frames(train), read_frames(valid)
    Trainer(load_config("local", SETTINGS), *frames, tmp_path / "one", show_progress=False).run()
    ddp = load_checkpoint(tmp_path / "ddp" / CHECKPOINT_FILE)
    one = load_checkpoint(tmp_path / "one" / CHECKPOINT_FILE)
    assert ddp["progress"]["global_step"] == one["progress"]["global_step"] == 6
    initial = Trainer(load_config("local", SETTINGS), *frames, tmp_path / "x").model.state_dict()
    moved = max(float((one["model"][k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3  # training really changed the weights
    for key in one["model"]:
        assert torch.allclose(ddp["model"][key], one["model"][key], rtol=1e-8, atol=1e-10), key
    # validation metrics are reduced over both processes: the same numbers
    assert ddp["progress"]["best_mae"] == pytest.approx(one["progress"]["best_mae"], rel=1e-9)
