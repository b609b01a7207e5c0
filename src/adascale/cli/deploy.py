"""CLI verbs ``route`` (learned routers on prediction sets), ``mixture`` (the conservative
adaptive mixture of trained branches) and ``md`` (molecular dynamics through ASE)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from adascale.cli.common import write_report
from adascale.runtime import DEVICE_HELP, keep_freed_memory, resolve_device, set_threads

THREADS_HELP = "CPU threads for torch (default: torch's choice). 1 is fastest on a busy machine."


def register(app: typer.Typer) -> None:
    """Add ``route``, ``mixture`` and ``md`` to the root app."""
    app.command("route")(route)
    app.command("mixture")(mixture)
    app.command("md")(md)


def route(
    train: Path = typer.Argument(..., help="PredictionSet .npz of the training frames (routers are fitted here)."),
    valid: Path = typer.Argument(
        ..., help="PredictionSet .npz of the validation frames (early stopping, hard vs soft, best_global_s)."
    ),
    test: Path = typer.Argument(..., help="PredictionSet .npz of the test frames (reported only)."),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="Scales the hard router chooses from, e.g. 0,0.25,0.5,1 (default: pool refined on TRAIN from the anchors).",
    ),
    features: str | None = typer.Option(
        None,
        "--features",
        help=(
            "Comma-separated feature blocks: geometry (stored by predict, or from --frames), species, d_ion, "
            "forces (branch disagreement and force sizes), latent (branch latent features, if stored). "
            "Default: geometry if available else species,d_ion; plus forces; with and without latent "
            "if stored (validation picks)."
        ),
    ),
    frames: list[Path] | None = typer.Option(
        None,
        "--frames",
        help="The frame files TRAIN, VALID and TEST were predicted on (give it 3 times, same order), to compute geometric features.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON (DESIGN §5, plus router_* methods) here."),
    out: Path | None = typer.Option(None, "--out", help="Save both routers here (DIR/hard, DIR/soft, DIR/selected.json)."),
    units: str = typer.Option("kJ/mol/nm", "--units", help="Unit of every MAE: kJ/mol/nm (default), meV/A or eV/A."),
    max_epochs: int = typer.Option(
        60, "--max-epochs", min=1, help="Most training epochs per router (early stopping on validation)."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=10, help="Bootstrap resamples (of frames) for the 95% confidence intervals."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the router initialisation, minibatches and bootstrap."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Learn to pick each atom's scale without labels, and measure it on the test set.

    Fits two routers on TRAIN from inference-time per-atom features (no reference forces
    are read at inference): 'hard' picks one scale of the pool per atom (trained on the
    expected force loss of its choice), 'soft' mixes the anchors with per-atom weights
    (trained on the L1 loss of the mixed force; with two anchors, a continuous scale s).
    Early stopping and the choice between them ('router') use VALID; TEST is only
    reported: MAE with 95% frame-bootstrap intervals for all atoms, ions and close-contact
    ions, beside the fixed scales, best_global_s (fitted on VALID) and the oracles, plus
    the fraction of the continuous-oracle gain each router recovers,
    (MAE_best_fixed - MAE_router) / (MAE_best_fixed - MAE_oracle_continuous).

    These routers mix forces per atom (fast, but not conservative); for MD use the
    conservative mixture (`adascale mixture`, then `adascale md`).

    Example: adascale route pred_train.npz pred_valid.npz pred_test.npz --json route.json --out routers/
    """
    from adascale.predictions import PredictionSet
    from adascale.report.console import methods_table, report_console
    from adascale.scales.axis import as_pool
    from adascale.scales.router_report import route as run_route
    from adascale.scales.router_report import save_routers
    from adascale.scales.routers import TrainSettings

    set_threads(threads)
    console = report_console()
    sets = [PredictionSet.load(path) for path in (train, valid, test)]
    if frames:
        _attach_geometry(sets, frames)
    blocks = [part.strip() for part in features.split(",") if part.strip()] if features else None
    settings = TrainSettings(max_epochs=max_epochs, seed=seed)
    with _stage_progress(console) as progress:
        report, fits, selected = run_route(
            *sets,
            pool=as_pool(pool) if pool else None,
            blocks=blocks,
            settings=settings,
            units=units,
            n_resamples=bootstrap,
            seed=seed,
            on_epoch=lambda label, row: progress(
                f"router {label}", row["epoch"], max_epochs, f"valid MAE {row['valid_mae']:.4f} eV/Å"
            ),
        )
    console.print(methods_table(report, title=f"Learned routers on {test}"))
    console.print(
        f"selected on validation: router_{selected}; features: {', '.join(report['routing']['feature_blocks'][selected])}"
    )
    if out is not None:
        save_routers(out, fits, selected)
        console.print(f"routers saved to {out}")
    write_report(json_out, report, console)


def _attach_geometry(sets: list, frames: list[Path]) -> None:
    """Compute geometric router features of each prediction set from its frame file."""
    import numpy as np

    from adascale.data.frames import read_frames
    from adascale.errors import AdaScaleError
    from adascale.models.features import FeatureSpec
    from adascale.scales.features import attach_router_features

    if len(frames) != len(sets):
        raise AdaScaleError(f"--frames: give one frame file per prediction set ({len(sets)}), got {len(frames)}")
    spec = FeatureSpec(
        species=tuple(np.unique(np.concatenate([s.species for s in sets])).tolist()),
        ion_species=tuple(sets[0].metadata["ion_species"]),
    )
    for predictions, path in zip(sets, frames):
        attach_router_features(predictions, read_frames(path, require_forces=False), spec, path=path)


def mixture(
    models: list[Path] = typer.Option(
        ..., "--model", help="Trained branch directories, shortest range first (give --model once per anchor)."
    ),
    train: Path = typer.Option(..., "--train", help="Labelled training frames (any file ASE reads): the router is fitted here."),
    valid: Path = typer.Option(..., "--valid", help="Labelled validation frames: early stopping and best_global_s."),
    test: Path = typer.Option(..., "--test", help="Labelled test frames: reported only."),
    out: Path = typer.Option(
        ..., "--out", help="Mixture directory to write (model.json + weights.pt); `adascale md --model` reads it."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the report JSON (DESIGN §5 plus the mixture's methods) here."
    ),
    scales: str | None = typer.Option(
        None, "--scales", help="Anchor scales of the models, e.g. 0,1 (default: evenly spaced on [0, 1])."
    ),
    train_frames: int = typer.Option(100, "--train-frames", min=1, help="Training frames (evenly spaced) for the warm start."),
    valid_frames: int = typer.Option(20, "--valid-frames", min=1, help="Validation frames (evenly spaced) for early stopping."),
    finetune_epochs: int = typer.Option(
        5, "--finetune-epochs", min=0, help="Epochs of fine-tuning on the conservative forces (0: warm start only)."
    ),
    finetune_frames: int = typer.Option(
        20, "--finetune-frames", min=1, help="Training frames per fine-tuning epoch (each epoch another subset)."
    ),
    finetune_minutes: float = typer.Option(
        10.0, "--finetune-minutes", min=0.0, help="Wall-clock budget of the fine-tuning, minutes."
    ),
    no_latent: bool = typer.Option(
        False, "--no-latent", help="Route on geometric features only, without the branches' latent features."
    ),
    units: str = typer.Option("kJ/mol/nm", "--units", help="Unit of every MAE: kJ/mol/nm (default), meV/A or eV/A."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=10, help="Bootstrap resamples (of frames) for the 95% confidence intervals."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the router initialisation and frame order."),
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

    Example: adascale mixture --model runs/branches/local --model runs/branches/long_range
    --train split/train.extxyz --valid split/valid.extxyz --test split/test.extxyz --out runs/mixture --json mixture.json
    """
    from adascale.data.frames import read_frames
    from adascale.deploy.fit_mixture import MixtureSettings, fit_mixture
    from adascale.errors import AdaScaleError
    from adascale.models.base import Branch
    from adascale.models.io import load_model, save_model
    from adascale.predictions import PredictionSet
    from adascale.report.console import methods_table, report_console
    from adascale.scales.axis import as_pool

    set_threads(threads)
    console = report_console()
    branches = [load_model(path, expect=Branch) for path in models]
    anchors = PredictionSet.default_scales(len(branches)) if scales is None else as_pool(scales, name="--scales")
    if len(anchors) != len(branches) or anchors[0] != 0.0 or anchors[-1] != 1.0:
        raise AdaScaleError(f"--scales: need {len(branches)} scales from 0 to 1, one per --model, got {anchors.tolist()}")
    frames = [read_frames(path) for path in (train, valid, test)]
    settings = MixtureSettings(
        train_frames=train_frames,
        valid_frames=valid_frames,
        finetune_epochs=finetune_epochs,
        finetune_frames=finetune_frames,
        finetune_minutes=finetune_minutes,
        use_latent=not no_latent,
        seed=seed,
    )
    with _stage_progress(console) as progress:
        built, report = fit_mixture(
            branches, anchors.tolist(), *frames, settings=settings, units=units, n_resamples=bootstrap, progress=progress
        )
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


@contextmanager
def _stage_progress(console) -> Iterator[Callable[[str, int, int, str], None]]:
    """A rich display whose callback ``(stage, done, total, status)`` keeps one bar per stage."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int, status: str) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, status="")
            progress.update(tasks[stage], completed=done, total=total, status=status)

        yield update
