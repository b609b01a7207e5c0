"""CLI verbs ``route`` (learned routers on prediction sets) and ``md`` (molecular dynamics
with a branch or a conservative mixture through ASE)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add ``route`` and ``md`` to the root app."""
    app.command("route")(route)


def route(
    train: Path = typer.Argument(..., help="PredictionSet .npz of the training frames (routers are fitted here)."),
    valid: Path = typer.Argument(..., help="PredictionSet .npz of the validation frames (early stopping, hard vs soft, best_global_s)."),
    test: Path = typer.Argument(..., help="PredictionSet .npz of the test frames (reported only)."),
    pool: Optional[str] = typer.Option(
        None, "--pool", help="Scales the hard router chooses from, e.g. 0,0.25,0.5,1 (default: pool refined on TRAIN from the anchors)."
    ),
    features: Optional[str] = typer.Option(
        None,
        "--features",
        help=(
            "Comma-separated feature blocks: geometry (stored by predict, or from --frames), species, d_ion, "
            "forces (branch disagreement and force sizes), latent (branch latent features, if stored). "
            "Default: geometry if available else species,d_ion; plus forces; plus latent if stored."
        ),
    ),
    frames: Optional[list[Path]] = typer.Option(
        None,
        "--frames",
        help="The frame files TRAIN, VALID and TEST were predicted on (give it 3 times, same order), to compute geometric features.",
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report JSON (DESIGN §5, plus router_* methods) here."),
    out: Optional[Path] = typer.Option(None, "--out", help="Save both routers here (DIR/hard, DIR/soft, DIR/selected.json)."),
    units: str = typer.Option("kJ/mol/nm", "--units", help="Unit of every MAE: kJ/mol/nm (default), meV/A or eV/A."),
    max_epochs: int = typer.Option(60, "--max-epochs", min=1, help="Most training epochs per router (early stopping on validation)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help="Bootstrap resamples (of frames) for the 95% confidence intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the router initialisation, minibatches and bootstrap."),
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
    conservative mixture of `adascale md`.

    Example: adascale route pred_train.npz pred_valid.npz pred_test.npz --json route.json --out routers/
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from adascale.cli.scales import _write_json
    from adascale.predictions import PredictionSet
    from adascale.report.console import methods_table
    from adascale.scales.axis import as_pool
    from adascale.scales.router_report import route as run_route
    from adascale.scales.router_report import save_routers
    from adascale.scales.routers import TrainSettings

    console = Console()
    sets = [PredictionSet.load(path) for path in (train, valid, test)]
    if frames:
        _attach_geometry(sets, frames)
    blocks = [part.strip() for part in features.split(",") if part.strip()] if features else None
    settings = TrainSettings(max_epochs=max_epochs, seed=seed)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {kind: progress.add_task(f"router {kind}", total=max_epochs, status="") for kind in ("hard", "soft")}

        def on_epoch(kind: str, row: dict) -> None:
            status = f"epoch {row['epoch']}  valid MAE {row['valid_mae']:.4f} eV/Å"
            progress.update(tasks[kind], completed=row["epoch"], status=status)

        report, fits, selected = run_route(
            *sets,
            pool=as_pool(pool) if pool else None,
            blocks=blocks,
            settings=settings,
            units=units,
            n_resamples=bootstrap,
            seed=seed,
            on_epoch=on_epoch,
        )
        for kind in tasks:
            progress.update(tasks[kind], completed=max_epochs)
    console.print(methods_table(report, title=f"Learned routers on {test}"))
    console.print(f"selected on validation: router_{selected}; features: {', '.join(report['routing']['feature_blocks'])}")
    if out is not None:
        save_routers(out, fits, selected)
        console.print(f"routers saved to {out}")
    _write_json(json_out, report, console)


def _attach_geometry(sets: list, frames: list[Path]) -> None:
    """Compute geometric router features of each prediction set from its frame file."""
    import numpy as np

    from adascale.data.frames import read_frames
    from adascale.errors import AdaScaleError
    from adascale.scales.features import FeatureSpec, attach_router_features

    if len(frames) != len(sets):
        raise AdaScaleError(f"--frames: give one frame file per prediction set ({len(sets)}), got {len(frames)}")
    spec = FeatureSpec(
        species=tuple(np.unique(np.concatenate([s.species for s in sets])).tolist()),
        ion_species=tuple(sets[0].metadata["ion_species"]),
    )
    for predictions, path in zip(sets, frames):
        attach_router_features(predictions, read_frames(path, require_forces=False), spec, path=path)
