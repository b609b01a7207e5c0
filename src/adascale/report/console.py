"""Readable console tables (rich) for report dictionaries (units, counts, methods).

They only read the report, so any stage's report (analyze, refine, route, evaluate)
prints the same way.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from adascale.data.regimes import ALL, IONS, SUBSETS
from adascale.report.format import gain_cell, mae_cell, method_detail, number, percent, scales_text


def methods_table(report: dict, title: str = "Force MAE") -> Table:
    """One row per method: MAE [95 % CI] per subset, plus the scale or pool it uses."""
    counts = report.get("counts", {})
    table = Table(title=f"{title} ({report['units']}, 95% frame-bootstrap CI)")
    table.add_column("method")
    for subset in SUBSETS:
        table.add_column(f"{subset} (n={counts.get(subset, '?')})", justify="right")
    table.add_column("gain recovered (all)", justify="right")
    table.add_column("scale / pool")
    for name, entry in report["methods"].items():
        cells = [mae_cell(entry.get(subset), (entry.get("ci") or {}).get(subset)) for subset in SUBSETS]
        gain = (entry.get("gain_recovered") or {}).get(ALL)
        table.add_row(name, *cells, "" if gain is None else percent(gain), method_detail(entry))
    return table


def refinement_table(report: dict) -> Table:
    """The refinement history: pool and L(P) on the fit set and on the analysed set."""
    block = report["refinement"]
    table = Table(title=f"Pool refinement ({block['update']}; fitted on {report['settings']['fitted_on']})")
    for column in ("step", "kind", "pool", f"fit MAE ({report['units']})", f"MAE ({report['units']})"):
        table.add_column(column, justify="right" if "MAE" in column or column == "step" else "left")
    for i, step in enumerate(block["history"]):
        table.add_row(str(i), step["step"], scales_text(step["pool"]), f"{step['fit_mae']:.3f}", f"{step['mae']:.3f}")
    return table


def complementarity_table(report: dict) -> Table:
    """Per subset: how often each anchor wins, their loss correlation, the oracle's s*."""
    block = report["complementarity"]
    table = Table(title="Anchor complementarity")
    for column in ("subset", "anchor wins", "loss corr.", "error corr.", "s* mean", "s* quartiles", "s* at an anchor"):
        table.add_column(column)
    for subset in SUBSETS:
        item = block.get(subset)
        if item is None:
            table.add_row(subset, "no samples", "", "", "", "", "")
            continue
        wins = ", ".join(f"{name} {percent(frac)}" for name, frac in item["win_fraction"].items())
        s_star = item["s_star"]
        table.add_row(
            subset,
            wins,
            _first_pair(item["loss_correlation"]),
            _first_pair(item["error_correlation"]),
            f"{s_star['mean']:.3f}",
            scales_text(s_star["quartiles"]),
            percent(s_star["at_anchor"]),
        )
    return table


def distance_table(report: dict, subset: str = IONS) -> Table:
    """MAE of every method in bins of nearest-ion distance."""
    bins = report["mae_by_distance"][subset]
    methods = list(bins[0]["mae"]) if bins else []
    table = Table(title=f"MAE vs nearest-ion distance, {subset} ({report['units']})")
    table.add_column("d_ion (nm)")
    table.add_column("n", justify="right")
    for name in methods:
        table.add_column(name, justify="right")
    for item in bins:
        label = f"{item['lo']:.2f}-{item['hi']:.2f}" if item["hi"] is not None else f">= {item['lo']:.2f}"
        table.add_row(label, str(item["count"]), *[number(item["mae"][name]) for name in methods])
    return table


def attribution_table(report: dict) -> Table:
    """Oracle gain over the best fixed scale of the scale pair and of the seed pair, and the
    part attributable to scale with its 95 % joint frame-bootstrap interval."""
    table = Table(title="Seed-null attribution (gain over each pair's best_global_s)")
    for column in ("oracle", "subset", "scale pair", "seed pair", "attributable [95% CI]"):
        table.add_column(column, justify="left" if column in ("oracle", "subset") else "right")
    for oracle, block in report["attribution"].items():
        for subset in SUBSETS:
            item = block[subset]
            table.add_row(
                oracle,
                subset,
                gain_cell(item["scale_gain"]),
                gain_cell(item["seed_gain"]),
                gain_cell(item["attributable"], item["ci"]),
            )
    return table


def _first_pair(matrix: list[list[float | None]] | None) -> str:
    """The correlation between the first two anchors (the whole matrix is in the JSON)."""
    value = None if matrix is None else matrix[0][1]
    return "-" if value is None else f"{value:.3f}"


def report_console() -> Console:
    """A console for report tables: the terminal's width, or 160 columns when output goes
    to a file or pipe (rich's default of 80 would wrap every interval onto three lines)."""
    import sys

    return Console(width=None if sys.stdout.isatty() else 160)
