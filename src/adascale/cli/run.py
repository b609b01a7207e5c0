"""CLI verbs ``run`` (the whole pipeline on the built-in testbed) and ``evaluate`` (a finished run on new frames)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer

from adascale.cli.common import write_report
from adascale.runtime import DEVICE_HELP, resolve_device


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``evaluate`` to the root app."""
    app.command("run")(run)
    app.command("evaluate")(evaluate)


def run(
    out: Path = typer.Option(Path("runs/default"), "--out", help="Run directory (created; an existing one is resumed)."),
    config: str | None = typer.Option(
        None,
        "--config",
        help="Run config: a YAML file or a built-in name: default (~10 min), quick (~3 min), paper (400/50/150 frames, ~50 min), "
        "amoeba (the default on AMOEBA labels).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Same as --config quick: minutes, noisy numbers."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a run setting, e.g. --set mixture.finetune_epochs=3 (dotted key, YAML value; repeatable)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Your own labelled frames (any format ASE reads) instead of the testbed, cut by --split."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Train,valid,test fractions of --data, contiguous in file order (default 0.8,0.1,0.1)."
    ),
    train: Path | None = typer.Option(None, "--train", help="Training frames (with --valid and --test, instead of --data)."),
    valid: Path | None = typer.Option(None, "--valid", help="Validation frames."),
    test: Path | None = typer.Option(None, "--test", help="Test frames."),
    ion_species: str | None = typer.Option(
        None, "--ion-species", help="Ion species of your data (d_i, report subsets; default Na,Cl)."
    ),
    forces_key: str | None = typer.Option(
        None, "--forces-key", help="Reference forces in your data (default REF_forces; 'forces' is the fallback)."
    ),
    energy_key: str | None = typer.Option(
        None, "--energy-key", help="Reference energy in your data (default REF_energy; 'energy' is the fallback)."
    ),
) -> None:
    """The paper's experiment, end to end, on the built-in NaCl(aq) testbed.

    Stages: generate the testbed with OpenMM (cached) -> split train/valid/test -> train
    each anchor branch (local PaiNN at 3.5 Å; PaiNN at 6.0 Å + learned-charge Ewald) ->
    predict -> refine the scale pool (fitted on valid) -> learned routers (fitted on train,
    selected on valid) -> conservative mixture -> report (all on test). Each stage is
    cached by a hash of its inputs and settings: a re-run redoes only what changed, and a
    killed run resumes (training continues from its checkpoint).

    Writes OUT/report.json (units, counts, methods, refinement, deployed, ...), OUT/report.md (tables with 95% frame-bootstrap
    intervals, the paper's figures beside ours) and OUT/plots/*.png.

    With --data FILE (or --train/--valid/--test) the same stages run on your own labelled
    frames: species come from the data, the anchors' cutoffs are checked against the cells,
    and a set too small for the split, frames without forces, an ion species absent from the
    data or a species missing from the training set are refused before any training. The
    report names the files and their SHA-256; a changed file invalidates the cache. A run
    config's `data:` block does the same.

    A run config (built-in or a YAML file) is merged onto the default run: what it leaves
    out keeps the default run's values. --set KEY=VALUE overrides one setting.

    Example: adascale run --out runs/default     (adascale run --quick for a first look)
    Example: adascale run --data dft.extxyz --split 0.8,0.1,0.1 --forces-key dft_forces --out runs/dft
    """
    from adascale.layout import RunLayout
    from adascale.pipeline import load_run_config, run_pipeline, with_data
    from adascale.report.console import methods_table, report_console

    console = report_console()
    settings = load_run_config(config, quick=quick, overrides=overrides)
    if data is not None or train is not None or valid is not None or test is not None:
        given = {
            "file": None if data is None else str(data),
            "split": None if split is None else _fractions(split),
            "train": None if train is None else str(train),
            "valid": None if valid is None else str(valid),
            "test": None if test is None else str(test),
            "ion_species": None if ion_species is None else [s.strip() for s in ion_species.split(",") if s.strip()],
            "forces_key": forces_key,
            "energy_key": energy_key,
        }
        settings = with_data(settings, **{key: value for key, value in given.items() if value is not None})
    start = time.perf_counter()
    report = run_pipeline(out, settings, console, command=shlex.join(["adascale", *sys.argv[1:]]))
    console.print(methods_table(report, title="Test-set force MAE"))
    console.print(f"report: {RunLayout(out).report_md} ({time.perf_counter() - start:.0f} s)")


def _fractions(text: str) -> tuple[float, float, float]:
    from adascale.errors import AdaScaleError

    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise AdaScaleError(f"--split must be three fractions like 0.8,0.1,0.1, got {text!r}")
    return values


def evaluate(
    run_dir: Path = typer.Option(..., "--run", help="A finished `adascale run` directory."),
    data: Path = typer.Option(..., "--data", help="Labelled frames (any format ASE reads) to evaluate on."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here."),
    forces_key: str = typer.Option(
        "REF_forces", "--forces-key", help="Reference force array in --data ('forces' is the fallback)."
    ),
    energy_key: str = typer.Option("REF_energy", "--energy-key", help="Reference energy in --data ('energy' is the fallback)."),
    device: str | None = typer.Option(None, "--device", help=f"Where the models run: {DEVICE_HELP}"),
) -> None:
    """Apply a finished run (branches, refined pool, routers, mixture) to new frames.

    Nothing is refitted: best_global_s comes from the run's validation set, the pool is the
    run's refined pool, the routers and the mixture are the run's. Prints the method table
    (fixed scales, oracles, routers, conservative mixture; 95% frame-bootstrap intervals) and
    writes the same report JSON as `adascale run`. Frames with species the run never saw give
    an error naming the file and frame.

    Example: adascale evaluate --run runs/default --data new_frames.extxyz --json eval.json
    """
    from adascale.pipeline import evaluate_run
    from adascale.report.console import methods_table, report_console

    report = evaluate_run(run_dir, data, forces_key=forces_key, energy_key=energy_key, device=resolve_device(device))
    console = report_console()
    console.print(methods_table(report, title=f"Force MAE on {data}"))
    write_report(json_out, report, console)
