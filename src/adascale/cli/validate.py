"""CLI verb ``validate``: a model's MD observables against the reference force field, side by side in OpenMM."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``validate`` to the root app."""
    app.command("validate")(validate)


def validate(
    run: Path | None = typer.Option(None, "--run", help="A finished run directory: its deployed model and its test frames."),
    model: Path | None = typer.Option(
        None, "--model", help="A model directory (adascale train, adascale mixture, RUN/deployed)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Starting frame file (any file ASE reads; default with --run: RUN/data/test.extxyz)."
    ),
    frame: int = typer.Option(0, "--frame", help="Index of the starting frame in the file (negative counts from the end)."),
    out: Path = typer.Option(Path("validate"), "--out", help="Directory for validate.json, validate.md and the plots."),
    json_out: Path | None = typer.Option(None, "--json", help="Write validate.json here instead of OUT/validate.json."),
    temperature: float | None = typer.Option(None, "--temperature", help="Temperature in K (default 300)."),
    pressure: float | None = typer.Option(None, "--pressure-bar", help="NPT pressure in bar (default 1)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the velocities, thermostat and barostat (default 0)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for OpenMM and torch (default: their choice)."
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a setting, e.g. --set protocol.nvt_prod_ps=3 (repeatable; see --show-settings).",
    ),
    show_settings: bool = typer.Option(False, "--show-settings", help="Print every setting with its default and exit."),
    cache: Path | None = typer.Option(
        None, "--cache-dir", help="Where reference runs are cached (default ~/.cache/adascale/validate)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Model precision: float32 (default) or float64."),
) -> None:
    """Run the model and the reference force field side by side in OpenMM and compare their physics.

    Both start from the same frame with the same integrator (Langevin), thermostat, Monte Carlo
    barostat and seeds; the reference is the testbed's own force field (SPC/E water +
    Joung-Cheatham ions, PME, rigid water), the model runs as an OpenMM PythonForce with rigid
    (SETTLE) water. Reported: NPT density (mean and block standard error, and the ratio), RDFs
    of O-O, O-H, H-H, Na-O, Cl-O and Na-Cl at the reference's density with the error
    E = integral 0..6 A |g_model - g_ref| dr and its sampling noise, the water-oxygen
    self-diffusion coefficient, and stability: the simulated time before the model's run
    collapses (a 1 ps window whose water-RDF error exceeds 3, a NaN, a failure of the MD, or
    molecules closer than the reference ever brings them). Reference runs are cached by state,
    protocol and starting frame, so a second model costs only its own MD.

    Default protocol: NPT 3 + 12 ps, NVT 1 + 14 ps at 2 fs (30 ps, 15,000 model steps: minutes to
    tens of minutes for a ~750-atom model on a CPU, see --show-settings); shorten it with --set for
    a quick look, e.g. --set protocol.npt_prod_ps=2 --set protocol.nvt_prod_ps=2.

    Example: adascale validate --run runs/default --out runs/default/validate --threads 2
    """
    from adascale.data.frames import read_frames
    from adascale.deploy.calculator import deployed_model_dir
    from adascale.errors import AdaScaleError
    from adascale.layout import RunLayout
    from adascale.report.console import report_console
    from adascale.runtime import set_threads
    from adascale.validate import settings_from, validate_model
    from adascale.validate.report import write_outputs
    from adascale.validate.settings import ValidateSettings

    if show_settings:
        typer.echo(ValidateSettings().model_dump_json(indent=2))
        raise typer.Exit()
    if (model is None) == (run is None):
        raise AdaScaleError("give exactly one of --model DIR or --run DIR")
    base: dict = {"state": {}, "protocol": {}}
    for block, key, value in (
        ("state", "temperature_K", temperature),
        ("state", "pressure_bar", pressure),
        ("protocol", "seed", seed),
    ):
        if value is not None:
            base[block][key] = value
    if threads is not None:
        base["threads"] = threads
    settings = settings_from(overrides, base)
    model_dir = model if run is None else deployed_model_dir(run)
    if data is None:
        if run is None:
            raise AdaScaleError("--model needs --data FILE, the starting frame")
        data = RunLayout(run).split("test")
        if not data.is_file():
            raise AdaScaleError(f"{run}: no test frames at {data}; give the starting frame with --data FILE")
    frames = read_frames(data, require_forces=False)
    if not -len(frames) <= frame < len(frames):
        raise AdaScaleError(f"{data}: --frame {frame} out of range: the file has {len(frames)} frames")
    set_threads(threads)
    console = report_console()
    report = validate_model(
        model_dir, frames[frame], settings, None, cache, progress=True, dtype=dtype, where=f"{data}: frame {frame}"
    )
    write_outputs(report, out, json_out)
    density, stability = report["density"], report["stability"]
    ratio = "n/a" if density["ratio"] is None else f"{density['ratio']:.3f}"
    console.print(f"density ratio model/reference {ratio}; stability: "
                  + (f"collapsed at {stability['time_ps']:.2f} ps ({stability['criterion']})" if stability["collapsed"] else f"stable for {stability['time_ps']:.2f} ps"))  # fmt: skip
    console.print(f"validation written to {out} (validate.md, plots) and {json_out or out / 'validate.json'}")
