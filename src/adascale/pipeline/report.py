"""The run's report: the stage reports merged into ``report.json`` / ``report.md``, with breakdowns and plots."""

from __future__ import annotations

import json

import numpy as np

from adascale.data.regimes import SUBSETS
from adascale.files import atomic_output, write_json
from adascale.layout import PLOTS, RunLayout
from adascale.pipeline.config import RunConfig
from adascale.pipeline.stages import load_predictions
from adascale.predictions import PredictionSet
from adascale.scales.methods import MIXTURE, MIXTURE_FORCE_MIXING, MIXTURE_METHODS, ROUTER, fixed_name, router_name
from adascale.validate.report import VALIDATE_JSON


def write_run_report(
    run: RunLayout, config: RunConfig, timings: dict[str, float], command: str | None = None, commit: str | None = None
) -> None:
    """Merge the stage reports into report.json / report.md and draw the plots; ``command``: what
    produced the run, stamped under ``provenance`` with ``commit``, the code's commit when the run started."""
    from adascale.provenance import provenance

    report = json.loads(run.route.read_text())
    refined = json.loads(run.refine.read_text())
    mixture = json.loads(run.mixture_report.read_text())
    report["refinement"] = refined["refinement"]
    for name in MIXTURE_METHODS:
        report["methods"][name] = mixture["methods"][name]
    report["mixture"] = mixture["mixture"]
    report["training"] = training_outcomes(run, config, mixture["mixture"]["finetune"])
    if config.adaptive is not None:
        add_adaptive(report, json.loads(run.adaptive.read_text()), config.adaptive.name)
    if config.seeded_anchors():
        add_seeds(report, json.loads(run.seeds.read_text()), [anchor.name for anchor in config.anchors])
        null = json.loads(run.seed_null.read_text())
        report["attribution"], report["attribution_by_distance"] = null["attribution"], null["attribution_by_distance"]
        report["settings"]["attribution"] = null["settings"]
    deploy = json.loads(run.deploy.read_text())
    report["methods"]["deployed"] = deploy["test"]
    report["deployed"] = {key: value for key, value in deploy.items() if key != "test"}
    report["pressure"] = json.loads(run.pressure.read_text())
    if config.validation is not None:  # validate.json without its curves (they stay in validate/)
        validation = json.loads((run.validation / VALIDATE_JSON).read_text())
        report["validation"] = {key: value for key, value in validation.items() if key != "curves"}
    if run.source.exists():
        report["data"] = json.loads(run.source.read_text())
    test = load_predictions(run, "test")
    losses = router_losses(run, test) | {"deployed": np.load(run.deployed_test_losses)}
    report["provenance"] = provenance(command, commit)
    finish_report(report, test, losses, run, timings)


def add_seeds(report: dict, seeds: dict, anchor_names: list[str]) -> None:
    """The anchors with several seeds in a run report: their ``fixed_s`` entries (seed 0's MAEs,
    unchanged) gain ``seed_ci``, the 95 % interval over seeds and frames of the mean over seeds,
    and ``seeds``; ``report["seeds"]`` holds each such anchor's per-seed MAEs, mean and interval
    on test (and the same on validation, what deployment ties on) and how they were made."""
    scales = report["settings"]["anchors"]["scales"]
    report["seeds"] = {}
    for name, block in seeds["anchors"].items():
        test = block["test"]
        entry = report["methods"][fixed_name(scales[anchor_names.index(name)])]
        entry["seed_ci"], entry["seeds"] = test["ci"], block["seeds"]
        report["seeds"][name] = {
            "seeds": block["seeds"],
            "models": block["models"],
            "per_seed": test["per_seed"],
            "mean": {subset: test[subset] for subset in SUBSETS},
            "ci": test["ci"],
            "valid": {
                "per_seed": block["valid"]["per_seed"],
                "mean": {s: block["valid"][s] for s in SUBSETS},
                "ci": block["valid"]["ci"],
            },
            "how": seeds["how"],
        }


def add_adaptive(report: dict, adaptive: dict, name: str) -> None:
    """The scale-conditioned model in a run report: ``<name>`` (its router, deployable) and
    ``<name>_best_s`` (all atoms at its best single scale: the control without adaptivity), plus
    its own scale analysis under ``report[name]``."""
    methods = adaptive["methods"]
    report["methods"][name] = methods["router"]
    report["methods"][f"{name}_best_s"] = methods["best_global_s"]
    report[name] = {
        "methods": methods,
        "refinement": adaptive["refinement"],
        "scale_distribution": adaptive["scale_distribution"],
    }


def training_outcomes(run: RunLayout, config: RunConfig, finetune: dict) -> dict[str, dict]:
    """How each anchor's training (every seed's) and the mixture fine-tune ended (steps, stopped, ``budget_hit``:
    the wall-clock upper bound cut it, so its numbers depend on the machine's load)."""
    from adascale.training.loop import OUTCOME_KEYS
    from adascale.training.trainer import METRICS_FILE

    directories = {name: run.branch(name) for anchor in config.anchors for name in anchor.model_names()}
    if config.adaptive is not None:
        name = config.adaptive.name
        directories |= {f"{name}_trunk": run.branch(f"{name}_trunk"), name: run.branch(name)}
    outcomes = {}
    for name, directory in directories.items():
        metrics = json.loads((directory / METRICS_FILE).read_text())
        outcomes[name] = {key: metrics["training"].get(key) for key in OUTCOME_KEYS}
        if "stress_training" in metrics:  # how many training frames the stress loss saw
            outcomes[name]["stress"] = metrics["stress_training"]
    outcomes["mixture_finetune"] = finetune
    return outcomes


def router_losses(run: RunLayout, test: PredictionSet) -> dict[str, np.ndarray]:
    """Per-sample losses (N,) of the run's saved routers on ``test``: router_hard, router_soft, router."""
    from adascale.scales.router_report import load_selected_router
    from adascale.scales.routers import KINDS, Router

    losses = {router_name(kind): Router.load(run.routers / kind).sample_loss(test) for kind in KINDS}
    losses[ROUTER] = load_selected_router(run.routers).sample_loss(test)
    return losses


def finish_report(
    report: dict,
    test: PredictionSet,
    extra_losses: dict[str, np.ndarray],
    run: RunLayout,
    timings: dict[str, float] | None = None,
) -> None:
    """Add the distance and species breakdowns (scale methods plus ``extra_losses`` (N,) eV/Å),
    the deployment table and the plots; write report.json and report.md into the run."""
    from adascale.report.markdown import render_markdown
    from adascale.report.plots import write_plots
    from adascale.scales.analysis import breakdown, method_losses

    per_sample = method_losses(test, report["methods"]) | extra_losses
    report.update(breakdown(test, per_sample, units=report["units"], n_resamples=report["settings"]["bootstrap"]["resamples"]))

    report["deployment"] = [
        {"mode": "per-atom force mixing (paper)", "method": ROUTER, "conservative": False},
        {"mode": "per-atom force mixing, mixture weights", "method": MIXTURE_FORCE_MIXING, "conservative": False},
        {"mode": "conservative energy mixture (MD)", "method": MIXTURE, "conservative": True},
    ]
    report["deployment"] = [item for item in report["deployment"] if item["method"] in report["methods"]]
    if timings:
        report["timings_s"] = timings
    report["plots"] = {name: f"{PLOTS}/{file}" for name, file in write_plots(report, run.plots).items()}
    write_json(run.report_json, report)
    with atomic_output(run.report_md) as tmp:
        tmp.write_text(render_markdown(report))
