"""``report.md``: the run's report dictionary as Markdown tables, beside the paper's figures.

It reads only the report dictionary (units, counts, methods plus the run's extra blocks), so a
report can be re-rendered from its JSON without touching models or predictions.
"""

from __future__ import annotations

import numpy as np

from adascale.data.regimes import ALL, CLOSE_CONTACT, SUBSETS
from adascale.report.format import gain_cell, mae_cell, method_detail, number, percent, scales_text
from adascale.scales.attribution import ORACLES
from adascale.scales.methods import BEST_GLOBAL_S, ORACLE_CONTINUOUS, ORACLE_HARD, ORACLE_POOL, fixed_methods

#: The paper's figures (arXiv 2606.09480; its units, most likely kJ/mol/nm): all-atom MAE per
#: method, and the close-contact MAE of the best fixed scale and of the continuous oracle.
PAPER_ALL: dict[str, float] = {
    "best fixed scale": 399.65,
    ORACLE_HARD: 382.67,
    ORACLE_CONTINUOUS: 380.96,
    f"{ORACLE_POOL} (refined)": 381.23,
}
PAPER_CLOSE_CONTACT: dict[str, float] = {"best fixed scale": 327.22, ORACLE_CONTINUOUS: 260.51}
PAPER_REFINED_POOL = [0, 0.125, 0.25, 0.375, 0.5, 0.75, 1]


def render_markdown(report: dict, title: str = "adascale report") -> str:
    """The whole report as one Markdown document."""
    parts = [f"# {title}", _intro(report), methods_markdown(report), paper_markdown(report), *section_markdowns(report)]
    if "plots" in report:
        parts.append("## Plots\n\n" + "\n".join(f"![{name}]({path})" for name, path in report["plots"].items()))
    return "\n\n".join(parts) + "\n"


def section_markdowns(report: dict) -> list[str]:
    """The sections a report has beyond the method and paper tables, in order: pool refinement, the
    anchors' seeds, the deployed model's choice, the deployment modes, its pressure on the test frames and its
    validation in MD (each only where the report holds its block)."""
    sections = {
        "refinement": refinement_markdown,
        "seeds": seeds_markdown,
        "deployed": deployed_markdown,
        "deployment": deployment_markdown,
        "pressure": pressure_markdown,
        "validation": validation_section,
    }
    return [text for key, render in sections.items() if key in report and (text := render(report))]


def _intro(report: dict) -> str:
    counts = report["counts"]
    settings = report.get("settings", {})
    lines = [
        f"Force MAE in **{report['units']}**, mean over x, y, z of |F_pred − F_ref|; brackets: 95 % bootstrap "
        "confidence intervals that resample whole frames.",
        f"Samples: all {counts['all']}, ions {counts['ions']}, close contact {counts['close_contact']} "
        "(ions whose nearest other ion is closer than 0.6 nm).",
    ]
    if "fitted_on" in settings:
        lines.append(f"Scales, pools and routers fitted on: {settings['fitted_on']}.")
    if "seeds" in report:
        names = ", ".join(f"{name} ({block['seeds']} seeds)" for name, block in report["seeds"].items())
        lines.append(
            f"Anchors trained with several seeds: {names}; their rows are seed 0, the anchor every other method uses, "
            "and the Seeds table gives their mean with intervals over seeds and frames: two-level bootstrap."
        )
    for name, outcome in report.get("training", {}).items():
        stress = outcome.get("stress") or {}
        if stress.get("stress_weight", 0) > 0 and stress.get("frames_with_stress", 0) < stress.get("frames", 0):
            lines.append(
                f"\nNote: {name} trained on stress for {stress['frames_with_stress']} of {stress['frames']} training frames; "
                "the others carry no stress label (or no 3D-periodic cell) and trained on forces and energy only."
            )
        if outcome.get("budget_hit"):
            lines.append(
                f"\n**Warning:** training of {name} was cut by its wall-clock bound after {outcome['steps']} steps: "
                "its numbers depend on this machine's load (raise the bound or budget fewer steps)."
            )
    return "\n".join(lines)


def methods_markdown(report: dict) -> str:
    """The method table: MAE [CI] per subset, gain recovered, scale or pool."""
    rows = ["| method | " + " | ".join(SUBSETS) + " | gain recovered (all) | scale / pool |", "|---" * 6 + "|"]
    for name, entry in report["methods"].items():
        cells = [mae_cell(entry.get(subset), (entry.get("ci") or {}).get(subset)) for subset in SUBSETS]
        gain = (entry.get("gain_recovered") or {}).get(ALL)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {percent(gain)} | {method_detail(entry)} |")
    return "## Methods\n\n" + "\n".join(rows)


def best_fixed(report: dict, subset: str) -> float | None:
    """The lowest MAE of a fixed scale (anchors and best_global_s) on a subset."""
    methods = report["methods"]
    names = [*fixed_methods(methods), *([BEST_GLOBAL_S] if BEST_GLOBAL_S in methods else [])]
    values = [methods[name][subset] for name in names if methods[name].get(subset) is not None]
    return min(values) if values else None


def paper_markdown(report: dict) -> str:
    """The paper's figures beside ours: absolute, and relative improvement over the best fixed scale."""
    methods = report["methods"]
    ours_all = {
        "best fixed scale": best_fixed(report, ALL),
        ORACLE_HARD: methods.get(ORACLE_HARD, {}).get(ALL),
        ORACLE_CONTINUOUS: methods.get(ORACLE_CONTINUOUS, {}).get(ALL),
        f"{ORACLE_POOL} (refined)": methods.get(ORACLE_POOL, {}).get(ALL),
    }
    rows = [
        "| method | paper (all) | paper vs best fixed | ours (all) | ours vs best fixed |",
        "|---|---|---|---|---|",
    ]
    for name, paper in PAPER_ALL.items():
        ours = ours_all[name]
        rows.append(
            f"| {name} | {paper:.2f} | {_improvement(PAPER_ALL['best fixed scale'], paper)} | "
            f"{number(ours)} | {_improvement(ours_all['best fixed scale'], ours)} |"
        )
    close_ours = {
        "best fixed scale": best_fixed(report, CLOSE_CONTACT),
        ORACLE_CONTINUOUS: methods.get(ORACLE_CONTINUOUS, {}).get(CLOSE_CONTACT),
    }
    for name, paper in PAPER_CLOSE_CONTACT.items():
        rows.append(
            f"| {name}, close contact | {paper:.2f} | "
            f"{_improvement(PAPER_CLOSE_CONTACT['best fixed scale'], paper)} | {number(close_ours[name])} | "
            f"{_improvement(close_ours['best fixed scale'], close_ours[name])} |"
        )
    rows.extend(seed_null_rows(report))
    pool = report.get("refinement", {}).get("final")
    note = (
        f"\n\nRefined pool: paper {scales_text(PAPER_REFINED_POOL)}, ours {scales_text(pool) if pool else '-'}. "
        "Absolute numbers are not comparable across datasets (the paper's testbed and models differ); "
        "the structure is: fixed > hard oracle > pool oracle ≥ continuous oracle."
    )
    if "attribution" in report:
        note += (
            " Seed null: the same oracle on two models of one scale that differ only in their training seed; "
            "its gain over its own best_global_s needs no difference in scale, so only the attributable part "
            "(scale pair's gain minus seed pair's, 95 % interval resampling frames jointly) is a gain of scale."
        )
    return "## Beside the paper\n\n" + "\n".join(rows) + note


def seed_null_rows(report: dict) -> list[str]:
    """Rows of the paper table for the seed null (none without ``attribution``): per oracle, on all
    atoms and in close contact, the seed pair's gain and the gain attributable to scale."""
    rows = []
    for key, block in report.get("attribution", {}).items():
        for subset in (ALL, CLOSE_CONTACT):
            item = block[subset]
            where = "" if subset == ALL else ", close contact"
            rows.append(
                f"| {ORACLES[key]}{where}, seed null | - | - | - | seed pair {gain_cell(item['seed_gain'])}; "
                f"attributable to scale {gain_cell(item['attributable'], item['ci'])} |"
            )
    return rows


def refinement_markdown(report: dict) -> str:
    """Pool refinement history: pool and loss on the fit set and on the reported set."""
    block = report["refinement"]
    rows = ["| step | kind | pool | fit MAE | MAE |", "|---|---|---|---|---|"]
    for i, step in enumerate(block["history"]):
        rows.append(
            f"| {i} | {step.get('step', '')} | {scales_text(step['pool'])} | "
            f"{number(step.get('fit_mae'))} | {number(step['mae'])} |"
        )
    head = f"## Pool refinement\n\nFrom {scales_text(block['initial'])} to {scales_text(block['final'])} ({block.get('update', 'insert')})."
    return head + "\n\n" + "\n".join(rows)


def seeds_markdown(report: dict) -> str:
    """Each anchor trained with several seeds: every seed's MAE and the mean with its interval over seeds and frames."""
    rows = [
        "| anchor | seeds | "
        + " | ".join(f"{subset}: per seed" for subset in SUBSETS)
        + " | "
        + " | ".join(f"{subset}: mean [95 %]" for subset in SUBSETS)
        + " |",
        "|---" * (2 + 2 * len(SUBSETS)) + "|",
    ]
    for name, block in report["seeds"].items():
        per_seed = [", ".join(number(v) for v in block["per_seed"][subset]) for subset in SUBSETS]
        means = [mae_cell(block["mean"][subset], block["ci"][subset]) for subset in SUBSETS]
        rows.append(f"| {name} | {block['seeds']} | " + " | ".join(per_seed + means) + " |")
    how = next(iter(report["seeds"].values()))["how"]
    return f"## Seeds\n\nTest set, {report['units']}; {how}.\n\n" + "\n".join(rows)


def deployed_markdown(report: dict) -> str:
    """Which model ``adascale run`` deployed, every candidate's validation MAEs it chose from, and,
    where the run chose among tied candidates by speed, which tied, their force-call times and why."""
    block = report["deployed"]
    timed = "candidates" in block
    columns = [*SUBSETS, *(["force call", "tied"] if timed else [])]
    rows = ["| candidate (validation) | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    extra = {item["name"]: item for item in block.get("candidates", [])}
    for name, entry in block.get("valid", {}).items():
        mark = " (deployed)" if name == block["model"] else ""
        cells = [number(entry.get(subset)) for subset in SUBSETS]
        if timed:
            cells += [_milliseconds(extra[name]["seconds_per_call"]), "yes" if extra[name]["tied"] else "no"]
        rows.append(f"| {name}{mark} | " + " | ".join(cells) + " |")
    head = f"## Deployed model\n\n`{block['model']}`, chosen on {block.get('chosen_on', 'validation')}; its test MAEs are the `deployed` row above."
    if timed:
        head += f" {block['reason']}. Rule: {block['rule']}."
    return head + "\n\n" + "\n".join(rows)


def deployment_markdown(report: dict) -> str:
    """The two deployment modes side by side (per-atom force mixing vs conservative energy mixture)."""
    rows = ["| mode | method | all | ions | close_contact | conservative |", "|---|---|---|---|---|---|"]
    for item in report["deployment"]:
        entry = report["methods"].get(item["method"], {})
        cells = " | ".join(number(entry.get(subset)) for subset in SUBSETS)
        rows.append(f"| {item['mode']} | {item['method']} | {cells} | {'yes' if item['conservative'] else 'no'} |")
    return "## Deployment modes\n\n" + "\n".join(rows)


def _milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms"


def _improvement(baseline: float | None, value: float | None) -> str:
    """Relative improvement over the baseline, in percent (positive = lower MAE)."""
    if baseline is None or value is None or baseline == 0:
        return "-"
    return f"{100 * (baseline - value) / baseline:+.2f} %"


def validation_section(report: dict) -> str:
    """The deployed model's MD observables beside the reference force field's (``adascale validate``)."""
    from adascale.validate.report import validation_markdown

    return "## Validation in MD (the deployed model)\n\n" + validation_markdown(report["validation"], plots_prefix="validate/")


def pressure_markdown(report: dict) -> str:
    """The deployed model's molecular (barostat) pressure beside the reference's on the test frames
    (empty when the test frames carry no stress)."""
    pressure = report["pressure"]
    if "difference" not in pressure:
        return ""
    difference = pressure["difference"]
    sem = "" if difference["sem"] is None else f" ± {difference['sem']:.0f}"
    return (
        "## Pressure on the test frames (the deployed model)\n\n"
        "Configurational pressure with molecules rigid (what a Monte Carlo barostat feels), from stress and forces, "
        f"over {pressure['frames']} test frames: reference {np.mean(pressure['reference']):.0f} bar, model "
        f"{np.mean(pressure['model']):.0f} bar; model − reference {difference['mean']:+.0f}{sem} bar "
        f"(per frame {difference['min']:+.0f} to {difference['max']:+.0f}). A model far above the reference expands under NPT."
    )
