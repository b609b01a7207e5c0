"""CLI verbs ``analyze`` and ``refine`` (the scale analysis of a PredictionSet, adascale.scales.analysis) and
``route`` (learned routers on prediction sets, adascale.scales.router_report)."""

from __future__ import annotations

from pathlib import Path

import typer

from adascale.cli.common import THREADS_HELP, stage_progress, write_report

PRED_HELP = "PredictionSet .npz written by `adascale predict` (labelled forces of K >= 2 anchor branches)."
FIT_HELP = (
    "PredictionSet to fit on (e.g. the validation set's predictions; same anchors). "
    "Without it, fitted quantities are fitted on PRED itself, and the report says so."
)
UNITS_HELP = "Unit of every MAE: kJ/mol/nm (default), meV/A or eV/A."
GRANULARITY_HELP = "Route each atom ('sample', default) or whole frames ('frame': one scale per frame)."
JSON_HELP = "Write the report JSON (units, counts, methods, ...) to this file."
BOOTSTRAP_HELP = "Bootstrap resamples (of frames) for the 95% confidence intervals."


def register(app: typer.Typer) -> None:
    """Add ``analyze``, ``refine`` and ``route`` to the root app."""
    app.command("analyze")(analyze)
    app.command("refine")(refine)
    app.command("route")(route)


def analyze(
    predictions: Path = typer.Argument(..., help=PRED_HELP),
    fit: Path | None = typer.Option(None, "--fit", help=FIT_HELP),
    pool: str | None = typer.Option(
        None, "--pool", help="Scales of the pool oracle, e.g. 0,0.5,1 (default: anchors and their midpoints)."
    ),
    granularity: str = typer.Option("sample", "--granularity", help=GRANULARITY_HELP),
    units: str = typer.Option("kJ/mol/nm", "--units", help=UNITS_HELP),
    json_out: Path | None = typer.Option(None, "--json", help=JSON_HELP),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help=BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
    null: Path | None = typer.Option(
        None,
        "--null",
        help="PredictionSet of two models of ONE scale that differ only in their training seed, on the same "
        "frames and atoms as PRED: the seed null. Adds 'attribution': the oracle gain that needs a difference in scale.",
    ),
    null_fit: Path | None = typer.Option(
        None, "--null-fit", help="Fit set of the null pair (like --fit; without it the null's best_global_s is in-sample)."
    ),
) -> None:
    """Where does each scale win? Fixed scales against the oracles, with error bars.

    For the subsets all atoms, ions, and close-contact ions (nearest other ion < 0.6 nm), prints
    and reports the force MAE of: each anchor as a fixed scale (fixed_s0, fixed_s1, ...); the
    best single scale best_global_s (fitted on --fit); and three oracles that look at the labels
    (upper bounds, not deployable): oracle_hard (best anchor per atom), oracle_continuous (best
    s in [0, 1] per atom, solved exactly) and oracle_pool (best scale of --pool per atom). Also
    how the anchors complement each other (win fractions, error correlation, the oracle's s*)
    and MAE in bins of nearest-ion distance. Every MAE has a 95% confidence interval from a
    bootstrap over frames.

    With --null, the oracles' gains over the best fixed scale are set against the gains of a
    seed pair (two models of one scale): the per-atom oracle profits from any two models whose
    errors differ, so only the difference, 'attributable', is a gain of scale. Gains are
    fractions of each pair's own best_global_s; the 95% interval resamples frames jointly.

    Example: adascale analyze pred_test.npz --fit pred_valid.npz --json analysis.json

    Example: adascale analyze pred_test.npz --fit pred_valid.npz --null seeds_test.npz --null-fit seeds_valid.npz
    """
    from adascale.errors import AdaScaleError
    from adascale.report.console import attribution_table, complementarity_table, distance_table, methods_table, report_console
    from adascale.report.format import subsets_text
    from adascale.scales.analysis import analyze as run_analysis

    if null_fit is not None and null is None:
        raise AdaScaleError("--null-fit needs --null (the seed pair it fits)")
    console = report_console()
    with console.status("analysing scales..."):
        null_set, null_fit_set, null_fit_label = _load(null, null_fit) if null is not None else (None, None, None)
        report = run_analysis(
            *_load(predictions, fit),
            pool=pool,
            granularity=granularity,
            units=units,
            n_resamples=bootstrap,
            seed=seed,
            null=null_set,
            null_fit=null_fit_set,
            null_label=None if null is None else str(null),
            null_fit_label=null_fit_label,
        )
    console.print(methods_table(report, title=f"Scale analysis of {predictions}"))
    console.print(f"best_global_s fitted on: {report['settings']['fitted_on']}; routing per {granularity}")
    console.print(f"subsets: {subsets_text(report['settings']['subsets'])}")
    console.print(complementarity_table(report))
    console.print(distance_table(report, "ions"))
    if "attribution" in report:
        console.print(attribution_table(report))
    write_report(json_out, report, console)


def refine(
    predictions: Path = typer.Argument(..., help=PRED_HELP),
    fit: Path | None = typer.Option(None, "--fit", help=FIT_HELP),
    init: str | None = typer.Option(None, "--init", help="Starting pool, e.g. 0,1 (default: the anchors' scales)."),
    max_size: int = typer.Option(9, "--max-size", min=1, help="Stop when the pool has this many scales."),
    tol: float = typer.Option(
        1e-3, "--tol", min=0.0, help="Stop when the best insertion lowers L(P) by less than this fraction."
    ),
    update: str = typer.Option(
        "insert",
        "--update",
        help="'insert': midpoint insertion only; 'gradient': also move interior scales (exact k-medians steps).",
    ),
    granularity: str = typer.Option("sample", "--granularity", help=GRANULARITY_HELP),
    units: str = typer.Option("kJ/mol/nm", "--units", help=UNITS_HELP),
    json_out: Path | None = typer.Option(None, "--json", help=JSON_HELP),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=10, help=BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
) -> None:
    """Grow a pool of scales where the loss says it pays (loss-guided refinement).

    Starting from --init, repeatedly tries the midpoint of every pair of neighbouring pool
    scales and inserts the one that lowers the pool-oracle loss L(P) (mean over atoms of the
    best in-pool loss) the most, until the pool has --max-size scales or the best relative
    gain is below --tol. With --update gradient the interior scales also move, after every
    insertion, to the exact minimiser of the loss of the atoms routed to them (each step
    never raises L(P)). The pool is fitted on --fit and reported on PRED; the history of
    (pool, L(P)) goes to the JSON 'refinement' block. MAEs in --units.

    Example: adascale refine pred_test.npz --fit pred_valid.npz --init 0,1 --max-size 7 --json refine.json
    """
    from adascale.report.console import methods_table, refinement_table, report_console
    from adascale.report.format import subsets_text
    from adascale.scales.analysis import refine as run_refine

    console = report_console()
    with console.status("refining the scale pool..."):
        report = run_refine(
            *_load(predictions, fit),
            init=init,
            max_size=max_size,
            tol=tol,
            update=update,
            granularity=granularity,
            units=units,
            n_resamples=bootstrap,
            seed=seed,
        )
    console.print(refinement_table(report))
    console.print(methods_table(report, title=f"Refined pool on {predictions}"))
    console.print(f"subsets: {subsets_text(report['settings']['subsets'])}")
    write_report(json_out, report, console)


def _load(predictions: Path, fit: Path | None) -> tuple:
    """(analysed set, fit set or None, fit label or None): the first arguments of analyze and refine."""
    from adascale.predictions import PredictionSet

    target = PredictionSet.load(predictions)
    if fit is None:
        return target, None, None
    return target, PredictionSet.load(fit), str(fit)


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
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the report JSON (units, counts, methods with the router_* methods) here."
    ),
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
    from adascale.runtime import set_threads
    from adascale.scales.axis import as_pool
    from adascale.scales.features import attach_features_from_files
    from adascale.scales.router_report import route as run_route
    from adascale.scales.router_report import save_routers
    from adascale.scales.routers import TrainSettings

    set_threads(threads)
    console = report_console()
    sets = [PredictionSet.load(path) for path in (train, valid, test)]
    if frames:
        attach_features_from_files(sets, frames)
    blocks = [part.strip() for part in features.split(",") if part.strip()] if features else None
    settings = TrainSettings(max_epochs=max_epochs, seed=seed)
    with stage_progress(console) as progress:
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
