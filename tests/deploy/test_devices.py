"""Devices for deployed models: the calculator, the OpenMM force, prediction and export on the CPU or a GPU.

The CPU tests check the plumbing (an explicit device, the refusals, what the exported file
declares); the CUDA tests, skipped where there is no GPU, check that a model on the GPU gives
the CPU's numbers through every path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metatomic.torch import load_atomistic_model
from metatomic_ase import MetatomicCalculator
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.frames import write_frames
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.deploy.export import export_model, supported_devices
from adascale.deploy.openmm_engine import run_openmm
from adascale.deploy.potential import Potential
from adascale.errors import AdaScaleError
from adascale.models.inference import model_forces, module_forces
from adascale.models.io import save_model
from deploy.tiny_models import make_branches
from training.tiny_data import labelled_frames

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the error where there is no GPU")


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_an_explicit_cpu_device_gives_the_default_numbers_and_leaves_the_callers_model_alone(mixture, periodic_frame):
    atoms = periodic_frame.to_atoms()
    reference = atoms.copy()
    reference.calc = AdaScaleCalculator(mixture, dtype="float32")
    for device in ("cpu", torch.device("cpu")):
        atoms.calc = AdaScaleCalculator(mixture, dtype="float32", device=device)
        assert atoms.calc.potential.device == torch.device("cpu")
        np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())
        np.testing.assert_array_equal(atoms.get_stress(), reference.get_stress())
    parameter = next(mixture.parameters())
    assert parameter.dtype == torch.float64 and parameter.device.type == "cpu"  # the Potential works on its own copy


@without_cuda
def test_cuda_is_refused_in_one_line_where_there_is_no_gpu(mixture, tmp_path):
    with pytest.raises(AdaScaleError, match=r"^device 'cuda': CUDA is not available here"):
        AdaScaleCalculator(mixture, device="cuda")
    save_model(tmp_path / "local", make_branches()[0])
    with pytest.raises(AdaScaleError, match=r"^device 'cuda': CUDA is not available here"):
        model_forces(tmp_path / "local", labelled_frames(1), device="cuda")


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("train", ["--train", "t.extxyz", "--valid", "v.extxyz", "--out", "out"]),
        ("predict", ["--model", "a", "--model", "b", "--data", "d.extxyz", "--out", "p.npz"]),
        ("evaluate", ["--run", "run", "--data", "d.extxyz"]),
        ("md", ["--model", "m", "--data", "d.extxyz"]),
    ],
)
@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_every_verb_checks_its_device_before_reading_anything(verb, args, device, tmp_path, monkeypatch):
    if device == "cuda" and CUDA:
        pytest.skip("checks the error where there is no GPU")
    monkeypatch.chdir(tmp_path)  # none of the files exist: the device is checked first
    result = CliRunner().invoke(app, [verb, *args, "--device", device])
    assert isinstance(result.exception, AdaScaleError), result.output
    expected = "CUDA is not available here" if device == "cuda" else "device must be cpu, cuda or cuda:N"
    assert expected in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_predict_on_an_explicit_cpu_gives_the_default_numbers(tmp_path):
    save_model(tmp_path / "local", make_branches()[0])
    frames = labelled_frames(2)
    default = model_forces(tmp_path / "local", frames)
    on_cpu = model_forces(tmp_path / "local", frames, device="cpu")
    for a, b in zip(default.forces, on_cpu.forces):
        np.testing.assert_array_equal(a, b)
    write_frames(tmp_path / "data.extxyz", frames)
    args = ["predict", "--model", "local", "--model", "local", "--data", "data.extxyz", "--out", "p.npz", "--device", "cpu"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.npz").is_file()


def test_export_declares_cuda_and_cpu_for_float32_and_the_cpu_only_for_float64(tmp_path):
    assert supported_devices("float32") == ["cuda", "cpu"] == supported_devices("float32", "cuda")
    assert supported_devices("float32", "cpu") == ["cpu", "cuda"]
    assert supported_devices("float64") == ["cpu"] == supported_devices("float64", "cpu")
    with pytest.raises(AdaScaleError, match=r"^float64 on cuda"):
        supported_devices("float64", "cuda")
    with pytest.raises(AdaScaleError, match=r"^device must be one of cuda, cpu, got 'tpu'"):
        supported_devices("float32", "tpu")
    model_dir = tmp_path / "local"
    save_model(model_dir, make_branches()[0])
    for args, expected in [([], ["cuda", "cpu"]), (["--device", "cpu"], ["cpu", "cuda"]), (["--dtype", "float64"], ["cpu"])]:
        out = tmp_path / "model.pt"
        result = CliRunner().invoke(app, ["export", "--model", str(model_dir), "--out", str(out), *args])
        assert result.exit_code == 0, result.output
        assert load_atomistic_model(str(out)).capabilities().supported_devices == expected
        assert f"devices {', '.join(expected)})" in " ".join(result.output.split())  # rich wraps lines


@needs_cuda
@pytest.mark.parametrize("which", ["local", "long_range", "mixture"])
def test_the_calculator_on_a_gpu_gives_the_cpus_numbers(which, mixture, periodic_frame):
    model = {"local": make_branches()[0], "long_range": make_branches()[1], "mixture": mixture}[which]
    atoms = periodic_frame.to_atoms()
    atoms.rattle(0.05, seed=2)
    on_cpu, on_gpu = atoms.copy(), atoms.copy()
    on_cpu.calc = AdaScaleCalculator(model, dtype="float32", device="cpu")
    on_gpu.calc = AdaScaleCalculator(model, dtype="float32", device="cuda")
    assert next(on_gpu.calc.model.parameters()).device.type == "cuda"
    assert on_gpu.get_potential_energy() == pytest.approx(on_cpu.get_potential_energy(), rel=1e-5)
    assert _relative(on_gpu.get_forces(), on_cpu.get_forces()) < 1e-4
    assert _relative(on_gpu.get_stress(), on_cpu.get_stress()) < 1e-4
    with pytest.raises(AdaScaleError, match=r"^float64 on cuda"):
        AdaScaleCalculator(model, dtype="float64", device="cuda")


@needs_cuda
def test_a_model_moved_to_the_gpu_predicts_the_cpus_forces(tmp_path):
    local = make_branches()[0].float()
    frames = labelled_frames(3)
    on_cpu = module_forces(local, frames, name="cpu")
    on_gpu = module_forces(local.to("cuda"), frames, name="gpu")
    assert all(_relative(a, b) < 1e-4 for a, b in zip(on_gpu.forces, on_cpu.forces))
    save_model(tmp_path / "local", local)  # saved from the GPU: the file holds CPU tensors
    from_file = model_forces(tmp_path / "local", frames, device="cuda")
    assert all(_relative(a, b) < 1e-4 for a, b in zip(from_file.forces, on_cpu.forces))


@needs_cuda
def test_openmm_steps_with_the_model_on_a_gpu_like_on_the_cpu(mixture, periodic_frame):
    settings = dict(steps=4, timestep_fs=0.5, ensemble="nve", temperature_K=300.0, interval=1, seed=0)
    summaries = [
        run_openmm(periodic_frame.to_atoms(), Potential(mixture, dtype="float32", device=device), **settings)
        for device in ("cpu", "cuda")
    ]
    np.testing.assert_allclose(summaries[1].total_energy, summaries[0].total_energy, rtol=1e-5)


@needs_cuda
def test_the_exported_model_runs_on_a_gpu(mixture, periodic_frame, tmp_path):
    path = export_model(mixture, tmp_path / "model.pt", dtype="float32")
    atoms = periodic_frame.to_atoms()
    reference, exported = atoms.copy(), atoms.copy()
    reference.calc = AdaScaleCalculator(mixture, dtype="float32")
    exported.calc = MetatomicCalculator(str(path), device="cuda")
    assert _relative(exported.get_forces(), reference.get_forces()) < 1e-4
