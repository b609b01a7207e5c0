"""CLI verbs ``mixture`` (the conservative adaptive mixture of trained branches) and ``md``
(molecular dynamics through ASE or OpenMM)."""

from __future__ import annotations

from pathlib import Path

import typer

from adascale.cli.common import THREADS_HELP, stage_progress, write_report
from adascale.runtime import DEVICE_HELP, keep_freed_memory, resolve_device, set_threads


def register(app: typer.Typer) -> None:
    """Add ``mixture`` and ``md`` to the root app."""
    app.command("mixture")(mixture)
    app.command("md")(md)


def mixture(
    models: list[Path] = typer.Option(
        [], "--model", help="Trained branch directories, shortest range first (give --model once per anchor)."
    ),
    train: Path | None = typer.Option(
        None, "--train", help="Labelled training frames (any file ASE reads): the router is fitted here."
    ),
    valid: Path | None = typer.Option(None, "--valid", help="Labelled validation frames: early stopping and best_global_s."),
    test: Path | None = typer.Option(None, "--test", help="Labelled test frames: reported only."),
    out: Path | None = typer.Option(
        None, "--out", help="Mixture directory to write (model.json + weights.pt); `adascale md --model` reads it."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the report JSON (units, counts, methods with the mixture's) here."
    ),
    scales: str | None = typer.Option(
        None, "--scales", help="Anchor scales of the models, e.g. 0,1 (default: evenly spaced on [0, 1])."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a mixture setting, e.g. --set finetune_epochs=3 --set use_latent=false (repeatable)."
    ),
    show_settings: bool = typer.Option(False, "--show-settings", help="List every mixture setting with its default and exit."),
    units: str = typer.Option("kJ/mol/nm", "--units", help="Unit of every MAE: kJ/mol/nm (default), meV/A or eV/A."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=10, help="Bootstrap resamples (of frames) for the 95% confidence intervals."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Combine trained branches into one conservative potential with a learned smooth router.

    The mixture's energy is E = sum_i sum_k w_ik (e_ik + c_k,Z_i): each atom's energy from
    each branch, weighted by a router (a small MLP on smooth geometric features and the
    branches' latent features giving each atom a scale on the axis between the branches,
    with smoothly rounded corners); forces are -dE/dR by autograd,
    the router's own gradient included, so it conserves energy in MD. Branches stay frozen.
    The router is warm-started on per-atom force mixing over TRAIN, then fine-tuned on the
    mixture's own conservative forces, keeping the epoch best on VALID.

    On TEST it reports, beside the fixed scales and oracles, both deployment modes:
    router_force_mixing (per-atom force mixing as in the paper: fast, not conservative)
    and mixture (the conservative energy mixture, for MD), MAEs with 95% frame-bootstrap
    intervals, all atoms / ions / close-contact ions.

    Settings (frame counts, fine-tuning budget, router size, seed, ...) are the `mixture:`
    block of a run config, with the same defaults: --show-settings lists them, --set changes one.

    Example: adascale mixture --model runs/branches/local --model runs/branches/long_range
    --train split/train.extxyz --valid split/valid.extxyz --test split/test.extxyz --out runs/mixture --json mixture.json
    """
    from adascale.data.frames import read_frames
    from adascale.errors import AdaScaleError
    from adascale.models.base import Branch
    from adascale.models.io import load_model, save_model
    from adascale.predictions import PredictionSet
    from adascale.report.console import methods_table, report_console
    from adascale.scales.axis import as_pool
    from adascale.scales.metrics import ReportContext
    from adascale.scales.mixture import fit_mixture
    from adascale.training.config import describe_settings, settings_with_overrides
    from adascale.training.mixture import MixtureSettings

    if show_settings:
        typer.echo(describe_settings(MixtureSettings))
        return
    missing = [
        option
        for option, value in (("--model", models), ("--train", train), ("--valid", valid), ("--test", test), ("--out", out))
        if not value
    ]
    if missing:
        raise AdaScaleError(f"missing {', '.join(missing)}")
    settings = settings_with_overrides(MixtureSettings, overrides)
    set_threads(threads)
    console = report_console()
    branches = [load_model(path, expect=Branch) for path in models]
    anchors = PredictionSet.default_scales(len(branches)) if scales is None else as_pool(scales, name="--scales")
    if len(anchors) != len(branches) or anchors[0] != 0.0 or anchors[-1] != 1.0:
        raise AdaScaleError(f"--scales: need {len(branches)} scales from 0 to 1, one per --model, got {anchors.tolist()}")
    frames = [read_frames(path) for path in (train, valid, test)]
    context = ReportContext(units=units, n_resamples=bootstrap)
    with stage_progress(console) as progress:
        built, report = fit_mixture(branches, anchors.tolist(), *frames, settings=settings, context=context, progress=progress)
    save_model(out, built, {"branch_dirs": [str(path) for path in models], "settings": report["mixture"]["settings"]})
    console.print(methods_table(report, title=f"Adaptive mixture on {test}"))
    console.print(
        f"mixture saved to {out}; validation MAE by fine-tuning epoch ({units}): "
        + ", ".join(f"{row['valid_mae']:.2f}" for row in report["mixture"]["finetune_history"])
    )
    write_report(json_out, report, console)


def md(
    model: Path | None = typer.Option(
        None, "--model", help="A model directory (adascale train, adascale mixture, or a run's deployed/)."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="A finished run directory: MD with the model it deployed (RUN/deployed)."
    ),
    data: Path = typer.Option(..., "--data", help="Frames file (any file ASE reads); labels are not needed."),
    frame: int = typer.Option(0, "--frame", help="Index of the starting frame in --data (negative counts from the end)."),
    engine: str = typer.Option(
        "ase", "--engine", help="ase (ASE's integrators) or openmm (OpenMM with the model as a PythonForce)."
    ),
    steps: int = typer.Option(1000, "--steps", min=0, help="Number of MD steps."),
    timestep_fs: float = typer.Option(
        1.0, "--timestep-fs", min=0.0, help="Timestep in femtoseconds (rigid water allows 1-2 fs)."
    ),
    ensemble: str = typer.Option(
        "nve",
        "--ensemble",
        help="nve (velocity Verlet), nvt (Langevin) or, with --engine openmm, npt (Langevin + Monte Carlo barostat).",
    ),
    temperature: float = typer.Option(
        300.0, "--temperature", min=0.0, help="Initial Maxwell-Boltzmann temperature, and the NVT/NPT target, in K."
    ),
    friction: float = typer.Option(0.01, "--friction", min=0.0, help="Langevin friction in 1/fs (NVT/NPT only)."),
    pressure: float = typer.Option(1.0, "--pressure-bar", help="NPT pressure in bar."),
    traj: Path | None = typer.Option(
        None, "--traj", help="Trajectory to write every --interval steps: ASE .traj (ase engine) or DCD (openmm engine)."
    ),
    log: Path | None = typer.Option(
        None, "--log", help="Energy log every --interval steps (ase: ASE MDLogger; openmm: OpenMM state-data CSV)."
    ),
    interval: int = typer.Option(10, "--interval", min=1, help="Write trajectory and log every this many steps."),
    flexible_water: bool = typer.Option(
        False, "--flexible-water", help="Do NOT constrain water (only for models trained on flexible water; see below)."
    ),
    mode: str = typer.Option(
        "conservative", "--mode", help="Mixtures: conservative (forces = -dE/dR) or force_mixing (per-atom, drifts in NVE)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (default, fast) or float64 (CPU only)."),
    device: str = typer.Option(None, "--device", help=f"Where the model runs: {DEVICE_HELP}"),
    skin: float = typer.Option(1.0, "--skin", min=0.0, help="Verlet-list skin in Å (0: a fresh neighbour list every step)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial velocities and the Langevin noise."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Run molecular dynamics with a trained model, through ASE or inside OpenMM.

    Starts from frame --frame of --data with Maxwell-Boltzmann velocities at --temperature,
    and integrates --steps steps of --timestep-fs, writing a trajectory (--traj) and an
    energy log (--log). At the end it prints the total-energy drift per atom per picosecond
    (least-squares slope): near zero for a conservative model in NVE, clearly nonzero for
    --mode force_mixing; NPT also prints the mean density with its standard error.
    The model runs on --device (a GPU in float32); both engines hand it positions and take
    its forces back on the CPU.

    Rigid water: the built-in NaCl(aq) testbed uses rigid SPC/E water, so its labels are
    intermolecular forces and its frames never show a stretched O-H bond; a model trained
    on them knows nothing of such motions. MD therefore keeps each water rigid (waters found
    by connectivity; adascale.RigidWater in ASE, SETTLE in OpenMM). --flexible-water turns
    this off, for models trained on flexible water only.

    Example: adascale md --run runs/quick --data test.extxyz --engine openmm --ensemble npt
    --steps 20000 --timestep-fs 2 --traj md.dcd --log md.csv
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from adascale.data.frames import read_frames
    from adascale.deploy.calculator import AdaScaleCalculator, deployed_model_dir
    from adascale.deploy.md import run_md
    from adascale.deploy.openmm_engine import run_openmm
    from adascale.errors import AdaScaleError
    from adascale.report.console import report_console

    if (model is None) == (run is None):
        raise AdaScaleError("give exactly one of --model DIR or --run DIR")
    if engine not in ("ase", "openmm"):
        raise AdaScaleError(f"--engine must be ase or openmm, got {engine!r}")
    set_threads(threads)
    device = resolve_device(device)
    keep_freed_memory()  # one system size every step: no page faults re-mapping the same tensors
    frames = read_frames(data, require_forces=False)
    if not -len(frames) <= frame < len(frames):
        raise AdaScaleError(f"{data}: --frame {frame} out of range: the file has {len(frames)} frames")
    atoms = frames[frame].to_atoms()
    source = model if run is None else deployed_model_dir(run)
    calculator = AdaScaleCalculator(source, dtype=dtype, mode=mode, skin=skin, device=device)
    console = report_console()
    columns = (
        TextColumn("MD"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps  {task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    settings = dict(
        steps=steps,
        timestep_fs=timestep_fs,
        ensemble=ensemble,
        temperature_K=temperature,
        friction_per_fs=friction,
        rigid_water=not flexible_water,
        trajectory=traj,
        log=log,
        interval=interval,
        seed=seed,
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("md", total=steps, status="")

        def on_step(step: int, total_energy: float, temperature_now: float) -> None:
            progress.update(task, completed=step, status=f"E_tot {total_energy:.4f} eV  T {temperature_now:.1f} K")

        if engine == "ase":
            summary = run_md(atoms, calculator, **settings, on_step=on_step)
        else:
            summary = run_openmm(atoms, calculator.potential, **settings, pressure_bar=pressure, threads=threads, on_step=on_step)
    console.print(
        f"{summary.steps} steps of {timestep_fs:g} fs ({ensemble.upper()}, {engine}), {summary.n_atoms} atoms, "
        f"{summary.n_waters_rigid} rigid waters; mean T {summary.temperature.mean():.1f} K; "
        f"E_tot drift {summary.drift_ev_per_atom_ps:.3e} eV/atom/ps, max |E_tot - E_tot(0)| {summary.max_deviation_ev_per_atom:.3e} eV/atom"
    )
    if ensemble == "npt" and len(summary.density) > 1:
        mean, error = summary.mean_density()
        console.print(f"density {mean:.4f} +- {error:.4f} g/cm3 (second half, block standard error)")
