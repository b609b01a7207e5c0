"""The stages of ``adascale run``, their work, and the run that chains them with caching.

testbed (OpenMM, cached) → split (or, with ``data:``, the user's own frames, checked and split;
keyed by their content hash) → train each anchor (and each of its seeds) → predict train/valid/test
→ refine the pool (fitted on validation) → route (routers fitted on train, selected on validation)
→ conservative mixture → the scale-conditioned model (optional) → the seeds of anchors with
several (their intervals over seeds and frames, and the seed null of the scale analysis) →
deploy (the fastest of the models that tie on validation) → report, all reported on test.
Seed 0 of every anchor is the anchor: the scale analysis, the routers, the mixture and
deployment use it; the other seeds measure how far retraining moves its numbers. Each stage is keyed by its settings and upstream keys
(:mod:`adascale.pipeline.plan`), so a re-run redoes only what changed, and a killed run resumes
(training continues from its checkpoint). Every path is the run's :class:`~adascale.layout.RunLayout`.

The run's species are those of its training split, decided once (:func:`run_species`): every
split's router features use them, so a species absent from a small validation or test set
changes nothing downstream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml
from rich.console import Console

from adascale.data.frames import Frame, read_frames
from adascale.files import atomic_output, write_json
from adascale.layout import SPLITS, RunLayout
from adascale.pipeline import deployment, seeds
from adascale.pipeline.cache import StageRunner
from adascale.pipeline.config import AdaptiveSettings, RunConfig
from adascale.pipeline.plan import stage_plan
from adascale.predictions import PredictionSet
from adascale.provenance import source_commit
from adascale.runtime import set_threads

if TYPE_CHECKING:
    import torch


def run_pipeline(out: Path, config: RunConfig, console: Console | None = None, command: str | None = None) -> dict:
    """Run (or resume) every stage into ``out``; returns the report dictionary. ``command``: the
    command line that asked for it, recorded in the report's ``provenance``."""
    from adascale.pipeline.report import write_run_report

    started_at = source_commit()  # the code this invocation runs, whatever the tree becomes while it runs
    console = console or Console()
    run = RunLayout(out)
    run.root.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads or None)  # 0, like None, leaves torch's choice
    with atomic_output(run.config) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
    stages = StageRunner(run.root, console)
    work = {
        **({"testbed": lambda: _generate(config, run.frames)} if config.data is None else {}),
        "split": (lambda: _split(run, config.split)) if config.data is None else (lambda: _prepare_data(run, config)),
        **{
            f"train_{name}": lambda a=a, seed=seed: _train(a.config, a.seed_overrides(seed), run, run.seed_branch(a.name, seed))
            for a in config.anchors
            for seed, name in enumerate(a.model_names())
        },
        "predict": lambda: _predict_splits(run, config),
        "refine": lambda: _refine(run, config),
        "route": lambda: _route(run, config),
        "mixture": lambda: _mixture(run, config),
        **({} if config.adaptive is None else _adaptive_work(run, config, config.adaptive)),
        **(
            {
                "predict_seeds": lambda: seeds.predict_seeds(run, config),
                "seeds": lambda: seeds.seed_intervals(run, config),
                "seed_null": lambda: seeds.seed_null_stage(run, config),
            }
            if config.seeded_anchors()
            else {}
        ),
        "deploy": lambda: deployment.deploy(run, config),
        "pressure": lambda: deployment.pressure(run),
        **({} if config.validation is None else {"validate": lambda: deployment.validate_deployed(run, config)}),
        "report": lambda: write_run_report(run, config, stages.timings, command, started_at),
    }
    stages.run_plan(stage_plan(config), work)
    return json.loads(run.report_json.read_text())


def _generate(config: RunConfig, path: Path) -> None:
    from adascale.data.testbed import generate_nacl

    path.parent.mkdir(parents=True, exist_ok=True)
    generate_nacl(config.testbed, path)


def _split(run: RunLayout, sizes: tuple[int, int, int]) -> None:
    from adascale.data.frames import write_frames
    from adascale.data.split import split_frames

    frames = read_frames(run.frames)
    run.source.unlink(missing_ok=True)  # left by an earlier `data:` run in this directory
    for name, block in zip(SPLITS, split_frames(frames, list(sizes))):
        write_frames(run.split(name), block)


def _prepare_data(run: RunLayout, config: RunConfig) -> None:
    """The user's frames, checked against every anchor (cutoffs, energies) and split."""
    from adascale.data.user_data import prepare_user_data
    from adascale.training.config import load_config

    anchors = [load_config(anchor.config, anchor.overrides) for anchor in config.anchors]
    needs_energy = [a.name for a, settings in zip(config.anchors, anchors) if settings.training.energy_weight > 0]
    cutoff = max(settings.model.cutoff for settings in anchors)
    prepare_user_data(config.data, run, cutoff=cutoff, energy_needed_by=needs_energy)


def _train(config_name: str, overrides: list[str], run: RunLayout, directory: Path) -> None:
    from adascale.training.checkpoint import CHECKPOINT_FILE
    from adascale.training.config import load_config
    from adascale.training.trainer import Trainer

    settings = load_config(config_name, overrides)
    keys = {"forces_key": settings.training.forces_key, "energy_key": settings.training.energy_key}
    trainer = Trainer(settings, read_frames(run.split("train"), **keys), read_frames(run.split("valid"), **keys), directory)
    if (directory / CHECKPOINT_FILE).exists():
        trainer.resume()  # a killed run continues where its last checkpoint left it
    trainer.run()


def run_species(run: RunLayout) -> tuple[int, ...]:
    """The run's species: the atomic numbers of its training split, what every model was trained on."""
    from adascale.training.data import training_species

    return tuple(training_species(read_frames(run.split("train"))))


def predictions_for(
    branch_dirs: Sequence[Path],
    frames: list[Frame],
    path: Path,
    names: list[str],
    species: Sequence[int],
    ion_species: Sequence[int],
    device: str | torch.device = "cpu",
) -> PredictionSet:
    """The anchors' PredictionSet on labelled ``frames`` (forces computed on ``device``), with router
    features of the run's ``species`` (not those of ``frames``: a small set may lack one) and
    ``ion_species`` (d_ion)."""
    from adascale.models.features import FeatureSpec
    from adascale.models.inference import model_forces, predict
    from adascale.scales.features import attach_router_features

    outputs = [model_forces(directory, frames, path=path, device=device) for directory in branch_dirs]
    predictions = predict(frames, outputs, path=path, metadata={"data": str(path), "ion_species": list(ion_species)})
    predictions.branch_names = names
    spec = FeatureSpec(species=tuple(int(z) for z in species), ion_species=tuple(int(z) for z in ion_species))
    attach_router_features(predictions, frames, spec, path=path)
    return predictions


def branch_dirs(run: RunLayout, config: RunConfig) -> list[Path]:
    """The anchors' model directories, shortest range first."""
    return [run.branch(anchor.name) for anchor in config.anchors]


def _predict_splits(run: RunLayout, config: RunConfig) -> None:
    from adascale.data.split import evenly_spaced

    names = [anchor.name for anchor in config.anchors]
    species = run_species(run)
    for split in SPLITS:
        frames = read_frames(run.split(split))
        if split == "train":
            frames = evenly_spaced(frames, config.route_train_frames)
        predictions = predictions_for(branch_dirs(run, config), frames, run.split(split), names, species, config.ion_species())
        predictions.save(run.predictions(split))


def load_predictions(run: RunLayout, split: str) -> PredictionSet:
    return PredictionSet.load(run.predictions(split))


def _refine(run: RunLayout, config: RunConfig) -> None:
    from adascale.scales.analysis import refine

    report = refine(
        load_predictions(run, "test"),
        fit=load_predictions(run, "valid"),
        fit_label="validation set",
        max_size=config.refine_max_size,
        tol=config.refine_tol,
        units=config.units,
        n_resamples=config.bootstrap,
    )
    write_json(run.refine, report)


def _route(run: RunLayout, config: RunConfig) -> None:
    from adascale.scales.router_report import route, save_routers

    pool = json.loads(run.refine.read_text())["refinement"]["final"]
    report, fits, selected = route(
        *(load_predictions(run, split) for split in SPLITS), pool=pool, units=config.units, n_resamples=config.bootstrap
    )
    save_routers(run.routers, fits, selected)
    write_json(run.route, report)


def _mixture(run: RunLayout, config: RunConfig) -> None:
    from adascale.models.base import Branch
    from adascale.models.io import load_model, save_model
    from adascale.scales.mixture import fit_mixture

    branches = [load_model(directory, expect=Branch) for directory in branch_dirs(run, config)]
    frames = [read_frames(run.split(split)) for split in SPLITS]
    scales = PredictionSet.default_scales(len(branches))
    mixture, report = fit_mixture(branches, scales, *frames, settings=config.mixture, context=config.report_context())
    save_model(run.mixture, mixture)
    write_json(run.mixture_report, report)


def _adaptive_work(run: RunLayout, config: RunConfig, adaptive: AdaptiveSettings) -> dict:
    trunk = run.branch(f"{adaptive.name}_trunk")
    return {
        "train_adaptive_trunk": lambda: _train(adaptive.config, adaptive.trunk_overrides, run, trunk),
        "train_adaptive": lambda: _train_router_phase(run, adaptive, trunk),
        "adaptive_analysis": lambda: _adaptive_analysis(run, config, adaptive),
    }


def _train_router_phase(run: RunLayout, adaptive: AdaptiveSettings, trunk: Path) -> None:
    """The router phase, from the trunk's weights and its best single scale on validation."""
    from adascale.models.io import load_model
    from adascale.scales.conditioned import grid_predictions
    from adascale.scales.oracles import anchor_errors, best_global_scale

    valid = grid_predictions(load_model(trunk), read_frames(run.split("valid")))
    start = best_global_scale(anchor_errors(valid), valid.scales)[0]
    derived = ["model.scale.mode=router", f"model.scale.fixed_scale={start:.6f}", f"training.init_from={trunk}"]
    _train(adaptive.config, [*adaptive.router_overrides, *derived], run, run.branch(adaptive.name))


def _adaptive_analysis(run: RunLayout, config: RunConfig, adaptive: AdaptiveSettings) -> None:
    from adascale.models.io import load_model
    from adascale.scales.conditioned import analyze_conditioned

    report = analyze_conditioned(
        load_model(run.branch(adaptive.name)),
        read_frames(run.split("valid")),
        read_frames(run.split("test")),
        grid=np.linspace(0.0, 1.0, adaptive.grid_points).tolist(),
        context=config.report_context(),
        max_size=config.refine_max_size,
        tol=config.refine_tol,
    )
    write_json(run.adaptive, report)
