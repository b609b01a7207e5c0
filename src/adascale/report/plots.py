"""PNG plots of a run's report dictionary.

Like the Markdown report they read only the report dictionary, so they can be redrawn from
``report.json``. matplotlib's object API (``Figure``) is used, not pyplot, so no global
backend state is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adascale.data.regimes import ALL, IONS
from adascale.files import atomic_output
from adascale.scales.methods import BEST_GLOBAL_S, MIXTURE, ORACLE_CONTINUOUS, ORACLE_HARD, ORACLE_POOL, ROUTER, fixed_name

#: The methods drawn in the distance and species plots, when the report has them.
PLOTTED_METHODS: tuple[str, ...] = (
    fixed_name(0),
    fixed_name(1),
    BEST_GLOBAL_S,
    ORACLE_HARD,
    ORACLE_POOL,
    ORACLE_CONTINUOUS,
    ROUTER,
    MIXTURE,
)


def write_plots(report: dict, directory: Path) -> dict[str, str]:
    """Draw every plot the report has data for; returns {name: file name relative to ``directory``}."""
    directory.mkdir(parents=True, exist_ok=True)
    drawers = {
        "mae_vs_distance": (plot_mae_vs_distance, "mae_by_distance"),
        "refinement": (plot_refinement, "refinement"),
        "s_star_histogram": (plot_s_star, "complementarity"),
        "mae_by_species": (plot_species, "mae_by_species"),
        "attributable_vs_distance": (plot_attributable, "attribution_by_distance"),
    }
    written = {}
    for name, (draw, needs) in drawers.items():
        if needs not in report:
            continue
        figure = draw(report)
        path = directory / f"{name}.png"
        with atomic_output(path) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        written[name] = path.name
    return written


def _methods(available: list[str]) -> list[str]:
    return [name for name in PLOTTED_METHODS if name in available]


def plot_mae_vs_distance(report: dict) -> Figure:
    """MAE against nearest-ion distance, one line per method, for all atoms and for ions."""
    block = report["mae_by_distance"]
    subsets = [s for s in (ALL, IONS) if block.get(s)]
    figure = Figure(figsize=(5.5 * len(subsets), 4))
    axes = figure.subplots(1, len(subsets), squeeze=False)[0]
    for ax, subset in zip(axes, subsets):
        bins = block[subset]
        centres = _bin_centres(bins)
        for name in _methods(list(bins[0]["mae"])):
            values = [np.nan if b["mae"][name] is None else b["mae"][name] for b in bins]
            ax.plot(centres, values, marker="o", label=name)
        ax.axvline(0.6, color="grey", linestyle=":", label="close contact (0.6 nm)")
        ax.set_xlabel("nearest-ion distance d_i (nm)")
        ax.set_ylabel(f"force MAE ({report['units']})")
        ax.set_title("all atoms" if subset == ALL else subset)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def _bin_centres(bins: list[dict]) -> list[float]:
    """Where to draw each d_ion bin: its middle, or 0.1 nm past the edge of the last, open one."""
    return [0.5 * (b["lo"] + b["hi"]) if b["hi"] is not None else b["lo"] + 0.1 for b in bins]


def plot_attributable(report: dict) -> Figure:
    """The oracle gain attributable to scale (scale pair's minus seed pair's) per bin of
    nearest-ion distance, with its 95 % interval, for the hard and the continuous oracle;
    all atoms and ions."""
    block = report["attribution_by_distance"]
    subsets = [s for s in (ALL, IONS) if block.get(s)]
    figure = Figure(figsize=(5.5 * len(subsets), 4))
    axes = figure.subplots(1, len(subsets), squeeze=False)[0]
    for ax, subset in zip(axes, subsets):
        for offset, (oracle, bins) in zip((-0.008, 0.008), block[subset].items()):
            centres = np.asarray(_bin_centres(bins)) + offset
            values = np.array([np.nan if b["attributable"] is None else 100 * b["attributable"] for b in bins])
            low = np.array([np.nan if b["ci"] is None else 100 * b["ci"][0] for b in bins])
            high = np.array([np.nan if b["ci"] is None else 100 * b["ci"][1] for b in bins])
            (line,) = ax.plot(centres, values, marker="o", label=f"{oracle} oracle")
            ax.vlines(centres, low, high, color=line.get_color(), alpha=0.6)  # a percentile interval need not hold the point
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axvline(0.6, color="grey", linestyle=":", label="close contact (0.6 nm)")
        ax.set_xlabel("nearest-ion distance d_i (nm)")
        ax.set_ylabel("oracle gain attributable to scale (% of best fixed)")
        ax.set_title(f"scale pair minus seed pair: {'all atoms' if subset == ALL else subset}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def plot_refinement(report: dict) -> Figure:
    """Left: loss against pool size. Right: where the pool's scales sit at each step."""
    history = report["refinement"]["history"]
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    sizes = [len(step["pool"]) for step in history]
    left.plot(sizes, [step["mae"] for step in history], marker="o", label="reported set")
    if all("fit_mae" in step for step in history):
        left.plot(sizes, [step["fit_mae"] for step in history], marker="s", label="fit set")
    oracle = report["methods"].get(ORACLE_CONTINUOUS, {}).get(ALL)
    if oracle is not None:
        left.axhline(oracle, color="grey", linestyle="--", label="continuous oracle")
    left.set_xlabel("pool size |P|")
    left.set_ylabel(f"pool-oracle MAE L(P) ({report['units']})")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for i, step in enumerate(history):
        right.scatter(step["pool"], [i] * len(step["pool"]), color="C0", s=18)
    right.set_xlabel("scale s")
    right.set_ylabel("refinement step")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlim(-0.05, 1.05)
    right.grid(alpha=0.3)
    return figure


def plot_s_star(report: dict) -> Figure:
    """Histogram of the continuous oracle's per-sample scale s*, for all atoms and for ions."""
    block = report["complementarity"]
    figure = Figure(figsize=(5.5, 4))
    ax = figure.subplots()
    for offset, subset in ((-0.02, ALL), (0.02, IONS)):
        if not block.get(subset):
            continue
        hist = block[subset]["s_star"]["histogram"]
        edges = np.asarray(hist["edges"])
        ax.bar(0.5 * (edges[:-1] + edges[1:]) + offset, hist["fraction"], width=0.04, label=subset)
    ax.set_xlabel("continuous-oracle scale s*")
    ax.set_ylabel("fraction of samples")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure


def plot_species(report: dict) -> Figure:
    """Grouped bars: MAE per chemical species for each method."""
    block = report["mae_by_species"]
    methods = _methods(list(block))
    species = list(next(iter(block.values())))
    figure = Figure(figsize=(max(5.5, 1.2 * len(species) * max(1, len(methods)) / 2), 4))
    ax = figure.subplots()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(species))
    for k, name in enumerate(methods):
        values = [np.nan if block[name][sp] is None else block[name][sp] for sp in species]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, values, width=width, label=name)
    ax.set_xticks(x, species)
    ax.set_ylabel(f"force MAE ({report['units']})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return figure
