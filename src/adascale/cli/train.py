"""CLI verbs ``adascale train`` and ``adascale predict``: thin wrappers over adascale.training and adascale.models."""

from __future__ import annotations

from pathlib import Path

import typer

from adascale.runtime import DEVICE_HELP, resolve_device, set_threads

TRAIN_HELP = """Train one branch (a force model of one spatial scale) on labelled frames.

Loss: forces (eV/Å; optionally plus per-atom energies), AdamW with warm-up and cosine decay,
validation force MAE (kJ/mol/nm) after every epoch, the best model kept, early stopping.

Config: a built-in name (`local`: anchor s=0, PaiNN at 3.5 Å; `long_range`: anchor s=1,
PaiNN at 6.0 Å plus learned charges with Ewald/PME electrostatics) or a YAML file, with
`--set key=value` overrides (dotted keys, YAML values). `--show-settings` lists every field.

Output directory: model.json + weights.pt (best model), config.yaml, log.jsonl (one line per
epoch), metrics.json (validation MAE for all atoms, ions, close contacts), checkpoint.pt.
`--resume` continues a killed run from its checkpoint; a fixed seed gives the same numbers.

Device: --device cuda trains on a GPU (the default where one is available; float32 only: a
float64 config is refused there), --device cpu on the CPU.

Several processes (data parallel, gloo on CPU, nccl on GPU, one GPU per process):
  torchrun --nproc_per_node 2 $(command -v adascale) train --config local --train T --valid V --out DIR

Example:
  adascale train --config long_range --train train.extxyz --valid valid.extxyz --out runs/lr --set training.max_steps=1400 --time-budget 15
"""

PREDICT_HELP = """Predict forces of K anchor branches on labelled frames; write a PredictionSet (.npz).

Anchors come in the order given (shortest range first): every --model, then every
--calculator. A --model may also be a calculator spec, to interleave them freely.
A calculator is any ASE calculator, named module:factory[:arg] where factory(arg) returns it
(e.g. two MACE models). The file holds ref and pred forces (eV/Å), species, frame and atom
indices, nearest-ion distances (nm), branch names and, for model branches, their latent
features (extras latent_0, latent_1, ...).

Example:
  adascale predict --model runs/local --model runs/long_range --data test.extxyz --out pred_test.npz
"""


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``predict`` to the root app."""
    app.command("train", help=TRAIN_HELP)(train)
    app.command("predict", help=PREDICT_HELP)(predict)


def train(
    config: str = typer.Option(None, "--config", help="Built-in config name (local, long_range) or a YAML file."),
    train_file: Path = typer.Option(None, "--train", help="Training frames (any format ASE reads)."),
    valid_file: Path = typer.Option(None, "--valid", help="Validation frames (selects the best model, early stopping)."),
    out: Path = typer.Option(None, "--out", help="Run directory for the model, log, metrics and checkpoint."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting, e.g. --set model.cutoff=4.0 (repeatable)."),
    time_budget: float = typer.Option(
        None,
        "--time-budget",
        help="Upper bound on the run's wall time, minutes (a run cut by it is flagged; budget by steps, "
        "--set training.max_steps=N, for reproducible numbers).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    device: str = typer.Option(None, "--device", help=f"Where to train: {DEVICE_HELP} GPUs train in float32 only."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    show_settings: bool = typer.Option(
        False, "--show-settings", help="List every config field with its default and meaning, then exit."
    ),
) -> None:
    from adascale.errors import AdaScaleError
    from adascale.training.config import describe_settings, load_config

    if show_settings:
        typer.echo(describe_settings())
        return
    missing = [name for name, value in (("--train", train_file), ("--valid", valid_file), ("--out", out)) if value is None]
    if missing:
        raise AdaScaleError(f"train needs {', '.join(missing)} (see adascale train --help)")
    if time_budget is not None:
        overrides = [*overrides, f"training.time_budget_minutes={time_budget}"]
    settings = load_config(config or "local", overrides)

    from adascale.data.frames import read_frames
    from adascale.training.checkpoint import CHECKPOINT_FILE
    from adascale.training.distributed import setup_distributed, teardown_distributed
    from adascale.training.trainer import Trainer

    set_threads(threads)
    device = resolve_device(device)
    if not resume and (out / CHECKPOINT_FILE).exists():
        raise AdaScaleError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    t = settings.training
    keys = {"forces_key": t.forces_key, "energy_key": t.energy_key, "stress_key": t.stress_key}
    train_frames = read_frames(train_file, **keys)
    valid_frames = read_frames(valid_file, **keys)
    context = setup_distributed(device)
    try:
        trainer = Trainer(settings, train_frames, valid_frames, out, context=context, show_progress=not quiet)
        if resume:
            trainer.resume()
        result = trainer.run()
    finally:
        teardown_distributed()
    if context.is_main:
        typer.echo(
            f"{out}: best validation force MAE {result.best_valid_mae:.2f} kJ/mol/nm (epoch {result.best_epoch}); "
            f"{result.epochs} epochs, {result.steps} steps, {result.elapsed_s / 60:.1f} min, stopped by {result.stopped}"
            + (f"; resumed at step {result.resumed_at_step}, ran {result.session_steps} steps" if resume else "")
            + ("; WARNING: the wall-clock bound cut the run (not reproducible)" if result.budget_hit else "")
        )


def predict(
    models: list[str] = typer.Option(
        [], "--model", help="Model directory from adascale train, or a calculator spec (repeatable, in anchor order)."
    ),
    calculators: list[str] = typer.Option([], "--calculator", help="ASE calculator as module:factory[:arg] (repeatable)."),
    data: Path = typer.Option(..., "--data", help="Labelled frames to predict on (any format ASE reads)."),
    out: Path = typer.Option(..., "--out", help="Output PredictionSet .npz."),
    forces_key: str = typer.Option("REF_forces", help="Reference force array in --data ('forces' is the fallback)."),
    energy_key: str = typer.Option("REF_energy", help="Reference energy in --data ('energy' is the fallback)."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    device: str = typer.Option(None, "--device", help=f"Where the models run: {DEVICE_HELP}"),
) -> None:
    import time

    from rich.progress import Progress

    from adascale.data.frames import read_frames
    from adascale.models.inference import calculator_forces, is_calculator_spec, model_forces
    from adascale.models.inference import predict as build_prediction_set

    set_threads(threads)
    device = resolve_device(device)
    frames = read_frames(data, forces_key=forces_key, energy_key=energy_key)
    branches = list(models) + list(calculators)
    n_atoms = sum(len(f) for f in frames)
    outputs, speeds = [], []
    with Progress() as progress:
        for name in branches:
            task = progress.add_task(f"{name}", total=len(frames))

            def advance(count: int, task=task) -> None:
                progress.advance(task, count)

            start = time.perf_counter()
            if name in calculators or is_calculator_spec(name):
                outputs.append(calculator_forces(name, frames, path=data, advance=advance))
            else:
                outputs.append(model_forces(name, frames, path=data, advance=advance, device=device))
            speeds.append(n_atoms / (time.perf_counter() - start))
    metadata = {"data": str(data), "atoms_per_second": speeds}
    prediction_set = build_prediction_set(frames, outputs, path=data, metadata=metadata)
    prediction_set.save(out)
    rates = ", ".join(f"{name}: {speed:.0f} atoms/s" for name, speed in zip(branches, speeds))
    typer.echo(f"{out}: {prediction_set.N} samples from {len(frames)} frames, K={prediction_set.K} ({rates})")
