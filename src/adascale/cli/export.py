"""``adascale export``: a model as a metatomic AtomisticModel file (TorchScript)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``export`` verb to the root app."""
    app.command("export")(export)


def export(
    model: Path | None = typer.Option(
        None, "--model", help="A model directory (adascale train, adascale mixture, a run's deployed/)."
    ),
    run: Path | None = typer.Option(None, "--run", help="A finished run directory: export the model it deployed (RUN/deployed)."),
    out: Path = typer.Option(..., "--out", help="The file to write (TorchScript, conventionally .pt)."),
    dtype: str = typer.Option(
        "float32", "--dtype", help="float32 (default, fast) or float64: the precision the engine runs it in."
    ),
    name: str = typer.Option("", "--name", help="A name stored in the file's metadata (default: 'adascale <kind>')."),
    device: str = typer.Option(
        None,
        "--device",
        help="cpu or cuda: the device the file asks engines to prefer (default: cuda where there is one, else cpu). "
        "float32 models declare both; float64 models the CPU only.",
    ),
) -> None:
    """Export a trained model as a metatomic AtomisticModel (TorchScript), for MD engines other than ASE and OpenMM.

    The file holds the model compiled by TorchScript; it needs metatomic-torch (and torch-pme
    for the long-range models) where it runs, not adascale. Engines compute forces and stress as
    gradients of its energy (eV; lengths in Å). Use it from ASE with
    metatomic_ase.MetatomicCalculator("model.pt"), or from i-PI, LAMMPS built with metatomic
    and torch-sim. Species the model was not trained on raise an error naming them.

    Rigid water: a model trained on the rigid-water testbed needs rigid water in MD there too
    (e.g. adascale.RigidWater in ASE, SHAKE/RATTLE in LAMMPS).

    Example: adascale export --run runs/default --out nacl.pt
    """
    from adascale.deploy.calculator import deployed_model_dir, load_model
    from adascale.deploy.export import export_model, supported_devices
    from adascale.errors import AdaScaleError
    from adascale.report.console import report_console

    if (model is None) == (run is None):
        raise AdaScaleError("give exactly one of --model DIR or --run DIR")
    source = model if run is None else deployed_model_dir(run)
    loaded = load_model(source)
    path = export_model(loaded, out, dtype=dtype, name=name, device=device)
    report_console().print(
        f"wrote {path}: {loaded.kind} model from {source} as a metatomic AtomisticModel ({dtype}, species {list(loaded.species)}, "
        f"cutoff {loaded.cutoff:g} Å, devices {', '.join(supported_devices(dtype, device))})"
    )
