"""validate.json (the report dictionary), validate.md (the side-by-side table) and the plots.

The Markdown and plots read only the report dictionary, so they can be redrawn from
validate.json. Units: density g/cm³, RDF error Å, D 1e-9 m²/s, time ps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adascale.files import atomic_output, write_json
from adascale.validate import analysis
from adascale.validate.settings import ValidateSettings

VALIDATE_JSON, VALIDATE_MD = "validate.json", "validate.md"


def _number(value: float) -> float | None:
    """JSON has no NaN or infinity: undefined values are null."""
    return float(value) if value is not None and np.isfinite(value) else None


def _density(arrays: dict, equil_ps: float, blocks: int, prefix: str = "") -> dict:
    times, density = np.asarray(arrays[f"{prefix}time_ps"]), np.asarray(arrays[f"{prefix}density"])
    production = density[analysis.production(times, equil_ps)]
    if len(production) < 2 * blocks:
        return {"mean": None, "sem": None}
    mean, sem = analysis.block_mean(production, blocks)
    return {"mean": mean, "sem": sem}


def _production_frames(arrays: dict, equil_ps: float, prefix: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.asarray(arrays[f"{prefix}time_ps"])
    keep = analysis.production(times, equil_ps)
    return times[keep], np.asarray(arrays[f"{prefix}positions"])[keep], np.asarray(arrays[f"{prefix}boxes"])[keep]


def assemble(start, settings: ValidateSettings, reference: dict, npt: dict, nvt: dict, npt_collapse, nvt_collapse) -> dict:
    """The validation report from the reference's cached arrays and the model's NPT and NVT traces."""
    protocol = settings.protocol
    blocks, numbers, molecule = protocol.blocks, start.numbers, start.molecule
    masses = start.atoms.get_masses()
    oxygens = np.flatnonzero((numbers == 8) & start.is_water)
    dt = protocol.sample_interval_ps
    model_density = _density(npt, protocol.npt_equil_ps, blocks)
    reference_density = _density(reference, protocol.npt_equil_ps, blocks, "npt_")
    ratio = None if model_density["mean"] is None else model_density["mean"] / reference_density["mean"]

    _, ref_frames, ref_boxes = _production_frames(reference, protocol.nvt_equil_ps, "nvt_")
    _, model_frames, model_boxes = _production_frames(nvt, protocol.nvt_equil_ps)
    model_ok = len(model_frames) >= 2 * blocks
    half = len(ref_frames) // 2
    rdf, curves = {}, {}
    for name, pair in analysis.PAIRS.items():
        r, g_ref = analysis.rdf(ref_frames, ref_boxes, numbers, molecule, pair)
        _, first = analysis.rdf(ref_frames[:half], ref_boxes[:half], numbers, molecule, pair)
        _, second = analysis.rdf(ref_frames[half:], ref_boxes[half:], numbers, molecule, pair)
        g_model = analysis.rdf(model_frames, model_boxes, numbers, molecule, pair)[1] if model_ok else np.full_like(g_ref, np.nan)
        rdf[name] = {
            "error": _number(analysis.rdf_error(g_model, g_ref)),
            "r_max_A": analysis.R_MAX_A,
            "noise": _number(analysis.rdf_error(first, second) / np.sqrt(2)),
        }
        curves[name] = {"model": [_number(v) for v in g_model], "reference": [_number(v) for v in g_ref]}

    stability = _stability(start, settings, g_reference={p: curves[p]["reference"] for p in analysis.WATER_PAIRS}, nvt=nvt,
                           npt_collapse=npt_collapse, nvt_collapse=nvt_collapse)  # fmt: skip
    ref_diffusion = analysis.diffusion(ref_frames, masses, oxygens, dt, blocks)
    model_diffusion = analysis.diffusion(model_frames, masses, oxygens, dt, blocks) if model_ok else None
    return {
        "state": {
            **settings.state.model_dump(),
            "atoms": len(numbers),
            "waters": len(start.waters),
            "ions": int(len(numbers) - 3 * len(start.waters)),
            "start_density": float(reference["npt_density"][0]),
            "nvt_density": float(np.asarray(reference["nvt_density"])[0]),
        },
        "protocol": {
            **protocol.model_dump(),
            "equil_ps": protocol.npt_equil_ps + protocol.nvt_equil_ps,
            "prod_ps": protocol.npt_prod_ps + protocol.nvt_prod_ps,
            "threads": settings.threads,
        },
        "density": {"model": model_density, "reference": reference_density, "ratio": _number(ratio)},
        "rdf": rdf,
        "diffusion": {
            "model": {"mean": None, "sem": None} if model_diffusion is None else {k: model_diffusion[k] for k in ("mean", "sem")},
            "reference": {k: ref_diffusion[k] for k in ("mean", "sem")},
        },
        "stability": stability,
        "curves": {
            "r_A": [float(v) for v in r],
            "rdf": curves,
            "density": {
                "model": {"time_ps": np.asarray(npt["time_ps"]).tolist(), "density": np.asarray(npt["density"]).tolist()},
                "reference": {"time_ps": reference["npt_time_ps"].tolist(), "density": reference["npt_density"].tolist()},
            },
            "msd": {
                "model": None if model_diffusion is None else {k: model_diffusion[k] for k in ("lag_ps", "msd_A2")},
                "reference": {k: ref_diffusion[k] for k in ("lag_ps", "msd_A2")},
            },
        },
    }


def _stability(start, settings: ValidateSettings, g_reference: dict, nvt: dict, npt_collapse, nvt_collapse) -> dict:
    """First collapse of the model's MD: NPT (engine failure, NaN, approach), then NVT (the same, or an RDF
    window), whichever comes first in simulated time. NPT time counts before NVT time.

    Every NVT window's water-RDF error is computed, so ``worst_window`` (the largest, with its pair and
    time) says how far the structure strayed even when an approach marked the collapse first.
    """
    protocol = settings.protocol
    npt_ps, nvt_ps = protocol.npt_steps * protocol.step_ps, protocol.nvt_steps * protocol.step_ps
    if npt_collapse[0] is not None:
        first = {"collapsed": True, "time_ps": npt_collapse[1], "criterion": npt_collapse[0], "phase": "npt"}
    elif nvt_collapse[0] is not None:  # the first collapse of the NVT run: an approach or a failure
        first = {"collapsed": True, "time_ps": npt_ps + nvt_collapse[1], "criterion": nvt_collapse[0], "phase": "nvt"}
    else:
        first = {"collapsed": False, "time_ps": npt_ps + nvt_ps, "criterion": None, "phase": None}
    times = np.asarray(nvt["time_ps"])
    positions, boxes = np.asarray(nvt["positions"]), np.asarray(nvt["boxes"])
    worst_window = None
    for window in analysis.windows(times, protocol.window_ps) if len(times) else []:
        errors = {
            pair: analysis.rdf_error(
                analysis.rdf(positions[window], boxes[window], start.numbers, start.molecule, analysis.PAIRS[pair])[1],
                np.asarray(g_reference[pair], dtype=float),
            )
            for pair in analysis.WATER_PAIRS
        }
        worst = max(errors, key=errors.get)
        at = npt_ps + float(times[window[0]])
        if worst_window is None or errors[worst] > worst_window["error"]:
            worst_window = {"error": errors[worst], "pair": worst, "time_ps": at}
        if errors[worst] > protocol.collapse_error and at < first["time_ps"]:
            criterion = f"{worst} RDF error {errors[worst]:.2f} Å over a {protocol.window_ps:g} ps window, above {protocol.collapse_error:g}"
            first = {"collapsed": True, "time_ps": at, "criterion": criterion, "phase": "nvt"}
    return first | {"worst_window": worst_window}


def _pm(block: dict | None, digits: int = 3) -> str:
    if not block or block.get("mean") is None:
        return "n/a"
    sem = block.get("sem")
    return f"{block['mean']:.{digits}f} ± {sem:.{digits}f}" if sem is not None else f"{block['mean']:.{digits}f}"


def render_markdown(report: dict) -> str:
    """validate.md: the model and the reference side by side."""
    return "# adascale validate\n\n" + validation_markdown(report)


def validation_markdown(report: dict, plots_prefix: str = "") -> str:
    """The side-by-side tables of a validation report (plots linked under ``plots_prefix``), for
    validate.md and for a run's report.md."""
    state, protocol, stability = report["state"], report["protocol"], report["stability"]
    worst = stability.get("worst_window")
    worst_rows = (
        [
            f"| largest water-RDF error of a {protocol['window_ps']:g} ps NVT window (collapse above "
            f"{protocol['collapse_error']:g}) | {worst['error']:.2f} Å ({worst['pair']}, at {worst['time_ps']:.1f} ps) | |"
        ]
        if worst
        else []
    )
    lines = [
        f"Model `{report.get('model', '?')}` against the reference force field (SPC/E + Joung-Cheatham, PME) in OpenMM, "
        f"{state['atoms']} atoms ({state['waters']} waters, {state['ions']} ions) at {state['temperature_K']:g} K and "
        f"{state['pressure_bar']:g} bar; same start, integrator, thermostat, barostat and seed ({protocol['seed']}). "
        f"NPT {protocol['npt_equil_ps']:g} + {protocol['npt_prod_ps']:g} ps, NVT {protocol['nvt_equil_ps']:g} + "
        f"{protocol['nvt_prod_ps']:g} ps (equilibration + production) at {protocol['timestep_fs']:g} fs.",
        "",
        "| observable | model | reference |",
        "|---|---|---|",
        f"| NPT density (g/cm³) | {_pm(report['density']['model'], 4)} | {_pm(report['density']['reference'], 4)} |",
        f"| density ratio model/reference | {'n/a' if report['density']['ratio'] is None else format(report['density']['ratio'], '.4f')} | 1 |",
        f"| water-O self-diffusion (1e-9 m²/s) | {_pm(report['diffusion']['model'], 2)} | {_pm(report['diffusion']['reference'], 2)} |",
        f"| stability | {'collapsed at ' + format(stability['time_ps'], '.2f') + ' ps: ' + stability['criterion'] if stability['collapsed'] else 'stable for ' + format(stability['time_ps'], '.2f') + ' ps'} | |",
        *worst_rows,
        "",
        f"RDF error E = ∫₀^{report['rdf']['O-O']['r_max_A']:g} Å |g_model − g_ref| dr (Å), at the reference's mean density; "
        "noise: the error two runs as good as the reference would show by sampling alone.",
        "",
        "| pair | E (Å) | noise (Å) |",
        "|---|---|---|",
    ]
    for pair, block in report["rdf"].items():
        error = "n/a" if block["error"] is None else f"{block['error']:.3f}"
        noise = "n/a" if block["noise"] is None else f"{block['noise']:.3f}"
        lines.append(f"| {pair} | {error} | {noise} |")
    plots = report.get("plots", {})
    if plots:
        lines += ["", *[f"![{name}]({plots_prefix}{file})" for name, file in plots.items()]]
    return "\n".join(lines) + "\n"


def plot_rdfs(report: dict):
    """One panel per pair: g(r) of the model over the reference's."""
    from matplotlib.figure import Figure

    curves, r = report["curves"]["rdf"], np.asarray(report["curves"]["r_A"])
    figure = Figure(figsize=(13, 7))
    for ax, (pair, block) in zip(figure.subplots(2, 3).ravel(), curves.items()):
        ax.plot(r, np.array(block["reference"], dtype=float), color="black", label="reference")
        ax.plot(r, np.array(block["model"], dtype=float), color="tab:red", label="model")
        error = report["rdf"][pair]["error"]
        ax.set_title(f"{pair}   E = {'n/a' if error is None else format(error, '.3f')} Å")
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_density(report: dict):
    """NPT density traces of both runs, with the production means."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4))
    ax = figure.subplots()
    for who, color in (("reference", "black"), ("model", "tab:red")):
        trace = report["curves"]["density"][who]
        ax.plot(trace["time_ps"], trace["density"], color=color, label=who, lw=1)
        mean = report["density"][who]["mean"]
        if mean is not None:
            ax.axhline(mean, color=color, ls=":", lw=1)
    ax.axvline(report["protocol"]["npt_equil_ps"], color="grey", ls="--", lw=1, label="end of equilibration")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("density (g/cm³)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def plot_msd(report: dict):
    """Water-oxygen MSD (centre-of-mass drift removed) of both NVT runs."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4))
    ax = figure.subplots()
    for who, color in (("reference", "black"), ("model", "tab:red")):
        curve = report["curves"]["msd"][who]
        if curve is not None:
            ax.plot(curve["lag_ps"], curve["msd_A2"], color=color, label=f"{who}: D = {_pm(report['diffusion'][who], 2)}")
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("MSD of water O (Å²)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


PLOTS = {"rdf": plot_rdfs, "density": plot_density, "msd": plot_msd}


def write_outputs(report: dict, directory: Path, json_path: Path | None = None) -> None:
    """validate.json, validate.md and the PNG plots into ``directory`` (each written atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    report["plots"] = {}
    for name, draw in PLOTS.items():
        path = directory / f"validate_{name}.png"
        with atomic_output(path) as tmp:
            draw(report).savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        report["plots"][name] = path.name
    write_json(json_path or directory / VALIDATE_JSON, report)
    with atomic_output(directory / VALIDATE_MD) as tmp:
        tmp.write_text(render_markdown(report))
