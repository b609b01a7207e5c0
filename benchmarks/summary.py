"""Turn the benchmark's measurements into ratios, a cost exponent and a markdown summary.

Pure functions over plain dicts, so the figures in ``results.md`` are exactly those in
``results.json``.
"""

from __future__ import annotations

import numpy as np

SUBSETS = ("all", "ions", "close_contact")
#: The two scales of the benchmark: adascale's branch and MACE's model at each.
SCALES = ("short", "long")


def loglog_slope(n_atoms: list[int], seconds: list[float]) -> float | None:
    """Exponent b of seconds ~ n_atoms**b (least-squares slope in log-log); 1 means linear cost.
    None with fewer than two sizes."""
    if len(n_atoms) < 2:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(n_atoms, dtype=float)), np.log(np.asarray(seconds, dtype=float)), 1)
    return float(slope)


def cost_exponent(rows: list[dict]) -> float | None:
    """:func:`loglog_slope` over the speed rows of one model that did not fail."""
    done = [row for row in rows if "error" not in row]
    return loglog_slope([row["n_atoms"] for row in done], [row["seconds_per_call"] for row in done])


def accuracy_ratios(adascale: dict[str, dict[str, float]], mace: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per scale and subset, adascale MAE / MACE MAE (below 1: adascale is more accurate)."""
    return {scale: {subset: _ratio(adascale[scale][subset], mace[scale][subset]) for subset in SUBSETS} for scale in SCALES}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator; None when either is missing (an empty subset) or the denominator is 0."""
    return None if numerator is None or not denominator else numerator / denominator


def speed_ratios(
    adascale: dict[str, list[dict]], mace: dict[str, list[dict]], key: str = "atoms_per_s"
) -> dict[str, list[float | None]]:
    """Per scale, adascale's ``key`` / MACE's at each size (atoms/s: above 1, adascale is faster;
    peak_rss_mb: below 1, it needs less memory); None where either run failed."""
    return {
        scale: [_ratio(a.get(key), m.get(key)) for a, m in zip(adascale[scale], mace[scale], strict=True)] for scale in SCALES
    }


def targets(results: dict) -> dict[str, bool]:
    """The issue's targets, each True only where every figure it needs was measured and meets it:
    MAE no worse than MACE at each scale (all atoms; ions reported beside), at least 2x MACE's
    atoms/s at every size, and adascale's cost linear in atoms (exponent at most 1.1)."""
    accuracy = results["accuracy"]["ratio_adascale_over_mace"]
    speed = results["speed"]

    def at_most(values: list[float | None], bound: float) -> bool:
        return all(v is not None and v <= bound for v in values)

    return {
        "mae_no_worse_than_mace": at_most([accuracy[scale]["all"] for scale in SCALES], 1.0),
        "ion_mae_no_worse_than_mace": at_most([accuracy[scale]["ions"] for scale in SCALES], 1.0),
        "atoms_per_s_at_least_2x_mace": all(
            r is not None and r >= 2.0 for scale in SCALES for r in speed["ratio_adascale_over_mace"][scale]
        ),
        "cost_linear_in_atoms": at_most([e for name, e in speed["exponent"].items() if name.startswith("adascale")], 1.1),
    }


def _number(value: float | None, digits: int = 1) -> str:
    """A table cell: the value, or "n/a" for an empty subset."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _with_interval(entry: dict, subset: str) -> str:
    """MAE with its 95 % bootstrap interval when the entry has one: ``106.2 [101.0, 111.9]``."""
    interval = entry.get("ci", {}).get(subset)
    text = _number(entry[subset])
    return text if interval is None else f"{text} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _training_table(training: dict) -> list[str]:
    lines = ["| model | budgeted time, s | epochs | optimizer steps |", "| --- | ---: | ---: | ---: |"]
    for name, record in training.items():
        lines.append(f"| {name} | {record['train_s']:,.0f} | {record['epochs']} | {record['steps']} |")
    return lines


def _mae_table(accuracy: dict) -> list[str]:
    lines = [
        "| model | all | ions | close contact |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, entry in accuracy["models"].items():
        lines.append(f"| {name} | " + " | ".join(_with_interval(entry, s) for s in SUBSETS) + " |")
    for scale, ratio in accuracy["ratio_adascale_over_mace"].items():
        lines.append(f"| ratio adascale/MACE, {scale} | " + " | ".join(_number(ratio[s], 2) for s in SUBSETS) + " |")
    return lines


def _speed_table(speed: dict, cores: int) -> list[str]:
    sizes = [max(row.get("n_atoms", 0) for row in rows) for rows in zip(*speed["models"].values())]
    multiples = [row["multiple"] for row in next(iter(speed["models"].values()))]
    lines = [
        "| model | "
        + " | ".join(f"{n} atoms" if n else f"x{m}" for n, m in zip(sizes, multiples))
        + " | exponent | peak RSS (largest done), MiB |",
        "| --- |" + " ---: |" * (len(sizes) + 2),
    ]
    for name, rows in speed["models"].items():
        cells = " | ".join("failed" if "error" in row else _number(row["atoms_per_s"], 0) for row in rows)
        done = [row for row in rows if "error" not in row]
        peak = _number(done[-1]["peak_rss_mb"], 0) if done else "n/a"
        lines.append(f"| {name} | {cells} | {_number(speed['exponent'][name], 2)} | {peak} |")
    for scale, ratios in speed["ratio_adascale_over_mace"].items():
        lines.append(f"| atoms/s ratio adascale/MACE, {scale} | " + " | ".join(_number(r, 2) for r in ratios) + " | | |")
    for scale, ratios in speed["peak_rss_ratio_adascale_over_mace"].items():
        lines.append(f"| peak RSS ratio adascale/MACE, {scale} | " + " | ".join(_number(r, 2) for r in ratios) + " | | |")
    loads = [row["load_average_1min"] for rows in speed["models"].values() for row in rows if "error" not in row]
    lines += [
        "",
        "Exponent: slope of log(seconds per call) against log(atoms); 1 is linear. "
        f"Machine load (1-min average) during the timings: {min(loads, default=0):.1f} to {max(loads, default=0):.1f} "
        f"on {cores} cores. Memory allocator: "
        + ", ".join(
            sorted(
                {row.get("malloc", "glibc default") for rows in speed["models"].values() for row in rows if "error" not in row}
            )
        )
        + " (the same for every model; see speed.py).",
    ]
    failures = [
        f"{name} x{row['multiple']}: {row['error']}" for name, rows in speed["models"].items() for row in rows if "error" in row
    ]
    lines += [f"- failed: {failure}" for failure in failures]
    return lines


def _scale_table(analysis: dict[str, dict]) -> list[str]:
    """Oracles and refinement of each model family's pair, all-atom and ion MAEs."""
    lines = [
        "| method | " + " | ".join(f"{family} all | {family} ions" for family in analysis) + " |",
        "| --- |" + " ---: | ---: |" * len(analysis),
    ]
    methods = ["fixed_s0", "fixed_s1", "best_global_s", "oracle_hard", "oracle_continuous", "oracle_pool"]
    for method in methods:
        cells = []
        for report in analysis.values():
            entry = report["methods"][method]
            cells += [_number(entry["all"]), _number(entry["ions"])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    for family, report in analysis.items():
        refinement = report["refinement"]
        start, end = refinement["history"][0], refinement["history"][-1]
        lines.append(
            f"- {family}: refinement from {refinement['initial']} to {refinement['final']}, "
            f"test MAE {_number(start['mae'])} -> {_number(end['mae'])} (all atoms)"
        )
    return lines


def render_markdown(results: dict) -> str:
    """The human summary of ``results.json``."""
    settings = results["settings"]
    lines = [
        "# adascale vs MACE",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"torch {results['machine']['torch']}, mace-torch {results['machine']['mace']}. "
        f"Training budget {settings['budget_min']} min per model, one model at a time.",
        "",
        "## Training (each model alone, same wall-clock budget)",
        "",
        *_training_table(results["training"]),
        "",
        f"## Test force MAE ({results['accuracy']['units']}; 95 % frame-bootstrap intervals)",
        "",
        *_mae_table(results["accuracy"]),
        "",
        "## Scale analysis of each pair (test set; best_global_s and refinement fitted on validation)",
        "",
        *_scale_table(results["scale_analysis"]),
        "",
        f"## Inference on CPU, {settings['speed_threads']} torch threads "
        "(atoms/s of the fastest timed energy+forces+stress call; one test frame tiled with Atoms.repeat)",
        "",
        *_speed_table(results["speed"], results["machine"]["cores"]),
        "",
        "## Targets",
        "",
        *[f"- {name}: {'met' if met else 'not met'}" for name, met in results["targets"].items()],
        "",
    ]
    return "\n".join(lines)
