"""CLI verbs ``run`` (the whole pipeline on the built-in testbed) and ``evaluate`` (a finished run on new frames)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from adascale.cli.common import write_report


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``evaluate`` to the root app."""
    app.command("run")(run)
    app.command("evaluate")(evaluate)


def run(
    out: Path = typer.Option(Path("runs/default"), "--out", help="Run directory (created; an existing one is resumed)."),
    config: str | None = typer.Option(
        None,
        "--config",
        help="Run config: a YAML file or a built-in name: default (~10 min), quick (~3 min), paper (400/50/150 frames, ~50 min).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Same as --config quick: minutes, noisy numbers."),
) -> None:
    """The paper's experiment, end to end, on the built-in NaCl(aq) testbed.

    Stages: generate the testbed with OpenMM (cached) -> split train/valid/test -> train
    each anchor branch (local PaiNN at 3.5 Å; PaiNN at 6.0 Å + learned-charge Ewald) ->
    predict -> refine the scale pool (fitted on valid) -> learned routers (fitted on train,
    selected on valid) -> conservative mixture -> report (all on test). Each stage is
    cached by a hash of its inputs and settings: a re-run redoes only what changed, and a
    killed run resumes (training continues from its checkpoint).

    Writes OUT/report.json (DESIGN §5 keys), OUT/report.md (tables with 95% frame-bootstrap
    intervals, the paper's figures beside ours) and OUT/plots/*.png.

    Example: adascale run --out runs/default     (adascale run --quick for a first look)
    """
    from adascale.pipeline import REPORT_MD, load_run_config, run_pipeline
    from adascale.report.console import methods_table, report_console

    console = report_console()
    settings = load_run_config(config, quick=quick)
    start = time.perf_counter()
    report = run_pipeline(out, settings, console)
    console.print(methods_table(report, title="Test-set force MAE"))
    console.print(f"report: {out / REPORT_MD} ({time.perf_counter() - start:.0f} s)")


def evaluate(
    run_dir: Path = typer.Option(..., "--run", help="A finished `adascale run` directory."),
    data: Path = typer.Option(..., "--data", help="Labelled frames (any format ASE reads) to evaluate on."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here."),
    forces_key: str = typer.Option(
        "REF_forces", "--forces-key", help="Reference force array in --data ('forces' is the fallback)."
    ),
    energy_key: str = typer.Option("REF_energy", "--energy-key", help="Reference energy in --data ('energy' is the fallback)."),
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

    report = evaluate_run(run_dir, data, forces_key=forces_key, energy_key=energy_key)
    console = report_console()
    console.print(methods_table(report, title=f"Force MAE on {data}"))
    write_report(json_out, report, console)
