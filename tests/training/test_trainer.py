"""The trainer: it learns, is reproducible, stops as configured, writes its outputs, and resumes after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import labelled_frames, write_split
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.frames import Frame
from adascale.errors import AdaScaleError
from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model
from adascale.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from adascale.training.config import load_config
from adascale.training.data import fit_species_shifts
from adascale.training.trainer import Trainer
from adascale.units import KJ_MOL_NM_PER_EV_A

FAST = ["model.cutoff=3.0", "model.features=8", "model.interactions=1", "training.warmup_steps=2", "training.dtype=float64"]
ADASCALE = str(Path(sys.executable).parent / "adascale")


@pytest.fixture(scope="module")
def data():
    return labelled_frames(6, seed=0), labelled_frames(2, seed=1)


def make_trainer(tmp_path, data, *overrides, name="local"):
    config = load_config(name, FAST + list(overrides))
    return Trainer(config, data[0], data[1], tmp_path, show_progress=False)


def test_training_lowers_the_validation_error(tmp_path, data):
    # no wall: these random validation frames hold pairs far closer than any training pair, where a
    # wall (rightly) adds forces the teacher does not have
    trainer = make_trainer(tmp_path, data, "training.max_epochs=20", "training.learning_rate=0.01", "model.repulsion=null")
    before = trainer.validate()["mae"]["all"]
    result = trainer.run()
    assert result.best_valid_mae < 0.7 * before
    assert result.stopped == "max_epochs" and result.epochs == 20 and result.steps == 120


def test_long_range_branch_trains_and_reloads(tmp_path, data):
    trainer = make_trainer(
        tmp_path,
        data,
        "training.max_epochs=2",
        "model.interaction_cutoff=2.5",
        "training.species_force_weights={11: 3.0, 17: 3.0}",
        "model.electrostatics.exclusion_inner=1.5",
        "model.electrostatics.exclusion_outer=2.5",
        name="long_range",
    )
    result = trainer.run()
    branch = load_model(tmp_path)
    assert branch.kind == "painn_long_range" and np.isfinite(result.best_valid_mae)
    # the saved model is the best epoch's; here that is the last one, so it is the trained model itself
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert result.best_epoch == result.epochs == 2 and lines[-1]["best"]
    trained, reloaded = trainer.model.eval(), branch.eval()
    forces = []
    for frame in data[1]:
        batch = AtomsBatch.from_frame(frame, trained.cutoff, dtype=torch.float64)
        a, b = trained(batch), reloaded(batch)  # float64 training: the reloaded model is float64 too
        assert torch.equal(a["forces"], b["forces"]) and torch.equal(a["energy"], b["energy"])
        forces.append(b["forces"].detach().numpy())
    # and it reproduces the validation error the trainer reported for it (kJ/mol/nm)
    per_atom = np.concatenate([np.abs(f - frame.forces).mean(axis=1) for f, frame in zip(forces, data[1])])
    assert per_atom.mean() * KJ_MOL_NM_PER_EV_A == pytest.approx(result.best_valid_mae, rel=1e-9)


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, data):
    def weights(seed: int, folder: str) -> dict:
        make_trainer(tmp_path / folder, data, "training.max_epochs=2", f"training.seed={seed}").run()
        return load_checkpoint(tmp_path / folder / CHECKPOINT_FILE)["model"]

    a, b, c = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_outputs_form_a_model_directory(tmp_path, data):
    trainer = make_trainer(tmp_path, data, "training.max_epochs=3")
    result = trainer.run()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"weights.pt", "model.json", "config.yaml", "log.jsonl", "metrics.json", "checkpoint.pt"} <= names
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert set(lines[0]["valid_force_mae"]) == {"all", "ions", "close_contact"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["units"] == "kJ/mol/nm" and metrics["training"]["stopped"] == "max_epochs"
    assert metrics["valid"]["force_mae"]["all"] == pytest.approx(result.best_valid_mae)
    best = min(lines, key=lambda line: line["valid_force_mae"]["all"])
    assert metrics["best_epoch"] == best["epoch"]
    assert load_config(tmp_path / "config.yaml") == trainer.config


def test_early_stopping_after_patience_validations_without_progress(tmp_path, data):
    result = make_trainer(tmp_path, data, "training.learning_rate=1e-30", "training.patience=2", "training.max_epochs=20").run()
    assert result.stopped == "early_stopping" and result.epochs == 3 and result.best_epoch == 1


def test_time_budget_stops_the_run_and_still_validates(tmp_path, data):
    result = make_trainer(tmp_path, data, "training.time_budget_minutes=0.0001", "training.max_epochs=50").run()
    assert result.stopped == "time_budget" and result.steps < 50 * 6
    assert (tmp_path / "weights.pt").is_file()


def test_resume_refuses_changed_settings(tmp_path, data):
    make_trainer(tmp_path, data, "training.max_epochs=1").run()
    make_trainer(tmp_path, data, "training.max_epochs=2").resume()  # allowed change
    with pytest.raises(AdaScaleError, match=r"cannot resume with different settings \(training.learning_rate\)"):
        make_trainer(tmp_path, data, "training.max_epochs=2", "training.learning_rate=0.1").resume()


def test_bad_training_data_fails_before_training(tmp_path, data):
    train, valid = data
    with pytest.raises(AdaScaleError, match="energy_weight > 0 needs reference energies"):
        unlabelled = [Frame(f.numbers, f.positions, f.cell, f.pbc, f.forces, None) for f in train]
        Trainer(load_config("local", FAST + ["training.energy_weight=1"]), unlabelled, valid, tmp_path)
    with pytest.raises(AdaScaleError, match="cell too small for cutoff 3.6"):
        Trainer(load_config("local", FAST + ["model.cutoff=3.6"]), train, valid, tmp_path)
    with pytest.raises(AdaScaleError, match="batch_size 7 exceeds the 6 training items"):
        Trainer(load_config("local", FAST + ["training.batch_size=7"]), train, valid, tmp_path)


def test_species_shifts_are_least_squares_on_compositions(rng):
    shifts = np.array([-0.5, -4.0, 1.5])
    frames = []
    for _ in range(8):
        numbers = rng.choice([1, 8, 11], size=rng.integers(3, 9))
        counts = np.array([np.sum(numbers == z) for z in (1, 8, 11)])
        frames.append(Frame(numbers, np.zeros((len(numbers), 3)), np.zeros((3, 3)), np.zeros(3, bool), None, counts @ shifts))
    assert np.allclose(fit_species_shifts(frames, [1, 8, 11]), shifts)
    same = [frames[0]] * 3  # one composition: rank deficient, the mean energy is still reproduced
    counts = np.array([np.sum(same[0].numbers == z) for z in (1, 8, 11)])
    assert counts @ fit_species_shifts(same, [1, 8, 11]) == pytest.approx(same[0].energy)


def _train_command(train: Path, valid: Path, out: Path, *extra: str) -> list[str]:
    settings = FAST + ["training.max_epochs=60", "training.checkpoint_every_steps=3"]
    return [
        ADASCALE,
        "train",
        "--config",
        "local",
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(out),
        "--threads",
        "1",
        "--quiet",
        *sum((["--set", s] for s in settings), []),
        *extra,
    ]


@pytest.mark.integration  # two training processes, one killed
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path):
    train, valid = write_split(tmp_path)
    subprocess.run(_train_command(train, valid, tmp_path / "straight"), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(train, valid, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (killed / CHECKPOINT_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert "training" not in json.loads((killed / "metrics.json").read_text() if (killed / "metrics.json").exists() else "{}")
    interrupted_at = load_checkpoint(killed / CHECKPOINT_FILE)["progress"]["global_step"]
    assert 0 < interrupted_at < 360

    resumed = subprocess.run(_train_command(train, valid, killed, "--resume"), check=True, capture_output=True, text=True)
    # the resumed process started from the checkpoint and ran only the steps that remained
    assert f"resumed at step {interrupted_at}, ran {360 - interrupted_at} steps" in resumed.stdout
    a, b = load_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE), load_checkpoint(killed / CHECKPOINT_FILE)
    assert b["progress"]["global_step"] == a["progress"]["global_step"] == 360
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    logs = [
        [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in (d / "log.jsonl").read_text().splitlines()]
        for d in (tmp_path / "straight", killed)
    ]
    assert logs[0] == logs[1]


def test_a_fresh_run_refuses_an_existing_run_directory(tmp_path):
    train, valid = write_split(tmp_path, 2, 1)
    args = _train_command(train, valid, tmp_path / "run")[1:]
    args[args.index("training.max_epochs=60")] = "training.max_epochs=1"
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, AdaScaleError)
    assert "already holds a training run; pass --resume" in str(again.exception)


def test_species_weights_enter_the_force_loss_as_a_weighted_mean(tmp_path, data):
    trainer = make_trainer(tmp_path, data, "training.energy_weight=0", "training.species_force_weights={11: 5.0, 17: 0.5}")
    indices = np.array([2])
    batch = trainer.task.train_set.batch(indices)
    forces = trainer.model(batch.atoms)["forces"].detach()
    weights = np.array([{11: 5.0, 17: 0.5}.get(int(z), 1.0) for z in data[0][2].numbers])
    expected = (((forces - batch.forces) ** 2).sum(1).numpy() * weights).sum() / (3 * weights.sum())
    objective, stats = trainer.task.loss(indices)
    assert float(objective.detach()) == pytest.approx(expected, rel=1e-10) and float(stats[0]) == float(objective.detach())


def test_repulsion_onsets_are_the_closest_training_distances(tmp_path, data):
    """Every species pair's wall starts at its closest distance in the training frames (minimum image,
    within the cutoff): brute force over all atom pairs; the margin lowers every onset."""
    from ase.geometry import get_distances

    closest: dict[tuple[int, int], float] = {}
    for frame in data[0]:
        _, r = get_distances(frame.positions, cell=frame.cell, pbc=frame.pbc)
        for i, j in zip(*np.triu_indices(len(frame), k=1)):
            if r[i, j] < 3.0:
                key = tuple(sorted((int(frame.numbers[i]), int(frame.numbers[j]))))
                closest[key] = min(closest.get(key, np.inf), r[i, j])
    for margin in (0.0, 0.1):
        model = make_trainer(tmp_path / str(margin), data, f"model.repulsion.margin={margin}").model
        onsets = {(a, b): r for a, b, r in model.repulsion.config()["pairs"]}
        assert onsets.keys() == closest.keys()
        assert all(onsets[key] == pytest.approx(closest[key] - margin, abs=1e-9) for key in closest)
    assert make_trainer(tmp_path / "none", data, "model.repulsion=null").model.repulsion is None
