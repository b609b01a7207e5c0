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

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml
from rich.console import Console

from adascale.data.frames import Frame, read_frames
from adascale.data.regimes import SUBSETS
from adascale.errors import AdaScaleError
from adascale.files import atomic_output, write_json
from adascale.layout import SPLITS, RunLayout
from adascale.pipeline.cache import StageRunner
from adascale.pipeline.config import AdaptiveSettings, RunConfig
from adascale.pipeline.plan import stage_plan
from adascale.predictions import PredictionSet
from adascale.runtime import set_threads

if TYPE_CHECKING:
    import torch


def run_pipeline(out: Path, config: RunConfig, console: Console | None = None, command: str | None = None) -> dict:
    """Run (or resume) every stage into ``out``; returns the report dictionary. ``command``: the
    command line that asked for it, recorded in the report's ``provenance``."""
    from adascale.pipeline.report import write_run_report

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
                "predict_seeds": lambda: _predict_seeds(run, config),
                "seeds": lambda: _seeds(run, config),
                "seed_null": lambda: _seed_null(run, config),
            }
            if config.seeded_anchors()
            else {}
        ),
        "deploy": lambda: _deploy(run, config),
        "pressure": lambda: _pressure(run),
        **({} if config.validation is None else {"validate": lambda: _validate(run, config)}),
        "report": lambda: write_run_report(run, config, stages.timings, command),
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


#: How the seed-aware intervals are made (seeds.json, report.json ``seeds``, report.md).
SEEDS_HOW = (
    "intervals over seeds and frames: two-level bootstrap (each resample draws the seeds with replacement and, "
    "independently, whole frames; the statistic is the mean over the drawn seeds of their MAE on the drawn frames)"
)


def _predict_seeds(run: RunLayout, config: RunConfig) -> None:
    """Every seed of each anchor with several, on valid and test: a PredictionSet per anchor and
    split (seed 0 first). Seed 0's forces are the run's own predictions (the numbers of its
    ``fixed_s`` rows); the other seeds' are computed on the same frames."""
    from adascale.models.inference import model_forces

    names = [anchor.name for anchor in config.anchors]
    for split in ("valid", "test"):
        anchors = load_predictions(run, split)
        frames = read_frames(run.split(split))
        for anchor in config.seeded_anchors():
            others = [
                np.concatenate(model_forces(run.seed_branch(anchor.name, seed), frames, path=run.split(split)).forces)
                for seed in range(1, anchor.seeds)
            ]
            seeds = dataclasses.replace(
                anchors,
                pred=np.stack([anchors.pred[names.index(anchor.name)], *others]),
                scales=PredictionSet.default_scales(anchor.seeds),
                branch_names=anchor.model_names(),
                metadata={key: anchors.metadata[key] for key in ("data", "ion_species", "close_contact_nm")}
                | {"seeds_of": anchor.name},
                extras={},
            )
            run.seed_predictions(anchor.name, split).parent.mkdir(parents=True, exist_ok=True)
            seeds.save(run.seed_predictions(anchor.name, split))


def _seeds(run: RunLayout, config: RunConfig) -> None:
    """seeds.json: per anchor with several seeds and per split (valid, test), the MAEs of every
    seed and of their mean with intervals over seeds and frames (``seed_frame_bootstrap``)."""
    from adascale.scales.metrics import seed_frame_bootstrap
    from adascale.units import force_unit_factor

    blocks = {}
    for anchor in config.seeded_anchors():
        block = {"seeds": anchor.seeds, "models": anchor.model_names()}
        for split in ("valid", "test"):
            seeds = PredictionSet.load(run.seed_predictions(anchor.name, split))
            losses = np.abs(seeds.pred - seeds.ref[None]).mean(axis=-1)  # (seeds, N) eV/Å
            block[split] = seed_frame_bootstrap(
                list(losses), seeds.frame, seeds.masks(), n_resamples=config.bootstrap, factor=force_unit_factor(config.units)
            )
        blocks[anchor.name] = block
    write_json(run.seeds, {"units": config.units, "how": SEEDS_HOW, "anchors": blocks})


def seed_pair(seeds: PredictionSet) -> PredictionSet:
    """Seeds 0 and 1 of an anchor's seed set: two models of one scale, the seed null's pair."""
    return dataclasses.replace(
        seeds, pred=seeds.pred[:2], scales=PredictionSet.default_scales(2), branch_names=seeds.branch_names[:2]
    )


def _seed_null(run: RunLayout, config: RunConfig) -> None:
    """seed_null.json: the oracle gains of the scale pair (the anchors) set against those of seeds
    0 and 1 of the null anchor, each pair's best_global_s fitted on validation, reported on test."""
    from adascale.scales.analysis import seed_null

    anchor = config.seed_null_anchor()
    pair = {split: seed_pair(PredictionSet.load(run.seed_predictions(anchor.name, split))) for split in ("valid", "test")}
    label = f"seeds 0 and 1 of {anchor.name}"
    report = seed_null(
        load_predictions(run, "test"),
        pair["test"],
        load_predictions(run, "valid"),
        pair["valid"],
        fit_label="validation set",
        null_label=f"{label}, test set",
        null_fit_label=f"{label}, validation set",
        n_resamples=config.bootstrap,
    )
    write_json(run.seed_null, report)


def deployment_candidates(run: RunLayout, config: RunConfig) -> dict[str, Path]:
    """Every model of a run that may be deployed: the anchors (seed 0 of each) and the adaptive models."""
    candidates = {anchor.name: run.branch(anchor.name) for anchor in config.anchors}
    candidates["mixture"] = run.mixture
    if config.adaptive is not None:
        candidates[config.adaptive.name] = run.branch(config.adaptive.name)
    return candidates


#: deploy.json / report.json ``deployed.chosen_on``.
CHOSEN_ON = (
    "validation force MAE, all atoms: of the candidates within the best's interval (over seeds and frames when "
    "the best is an anchor with several seeds, else over frames), the fastest force call"
)


def _deploy(run: RunLayout, config: RunConfig) -> None:
    """Score every candidate on validation, copy the chosen one to ``deployed/`` and report it on test.

    The candidates whose validation MAE (all atoms) lies within the best's 95 % interval tie
    (:func:`adascale.scales.ties.choose_fastest`): the interval over seeds and frames when the
    best is an anchor with several seeds, else its frame-bootstrap interval. Only the tie-break
    uses time: of the tied candidates, the one whose energy + forces call on one validation frame
    is fastest (through :class:`~adascale.deploy.potential.Potential`, float32, as MD runs it;
    the median of a few calls after a warm-up) is deployed. Timings depend on the machine, so
    speeds within the chooser's tolerance count as equal (then the lower MAE wins), and
    deploy.json records every timing and why it chose.
    """
    from adascale.models.io import MODEL_FILE, WEIGHTS_FILE, load_model
    from adascale.scales.evaluate import losses_entry, sample_losses
    from adascale.scales.ties import choose_fastest

    valid, test = (read_frames(run.split(split)) for split in ("valid", "test"))
    context = config.report_context()
    candidates = deployment_candidates(run, config)
    scores = {name: losses_entry(sample_losses(load_model(path), valid), valid, context) for name, path in candidates.items()}
    seeded = json.loads(run.seeds.read_text())["anchors"] if config.seeded_anchors() else {}
    intervals = {name: (seeded[name]["valid"] if name in seeded else scores[name])["ci"]["all"] for name in scores}
    seconds = {name: force_call_seconds(path, valid[0]) for name, path in candidates.items()}
    choice = choose_fastest({name: {"mae": scores[name]["all"], "ci": intervals[name]} for name in scores}, seconds)
    chosen = choice.pop("model")
    staging = run.deployed_staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        shutil.copy2(candidates[chosen] / name, staging / name)
    shutil.rmtree(run.deployed, ignore_errors=True)
    staging.rename(run.deployed)
    losses = sample_losses(load_model(run.deployed), test)
    np.save(run.deployed_test_losses, losses)
    deployed = losses_entry(losses, test, context, model=chosen)
    selection = {name: {subset: entry[subset] for subset in SUBSETS} for name, entry in scores.items()}
    write_json(run.deploy, {"model": chosen, "chosen_on": CHOSEN_ON, **choice, "valid": selection, "test": deployed})


def force_call_seconds(directory: Path, frame: Frame) -> float:
    """Wall seconds of one energy + forces call of the model in ``directory`` on ``frame`` as MD
    makes it (:class:`~adascale.deploy.potential.Potential`, float32, Verlet list kept between calls)."""
    from adascale.deploy.calculator import load_model
    from adascale.deploy.potential import Potential
    from adascale.scales.ties import seconds_per_call

    potential = Potential(load_model(directory), dtype="float32")
    return seconds_per_call(lambda: potential.compute(frame.numbers, frame.positions, frame.cell, frame.pbc))


def _validate(run: RunLayout, config: RunConfig) -> None:
    """``adascale validate`` of the deployed model from a test frame, into ``validate/``."""
    from adascale.validate import validate_model
    from adascale.validate.settings import ValidateSettings

    settings = ValidateSettings.model_validate(config.validation.model_dump(exclude={"frame"}))
    frames = read_frames(run.split("test"))
    if not -len(frames) <= config.validation.frame < len(frames):
        raise AdaScaleError(f"validate.frame {config.validation.frame}: the test set has {len(frames)} frames")
    where = f"{run.split('test')}: frame {config.validation.frame}"
    validate_model(run.deployed, frames[config.validation.frame], settings, out_dir=run.validation, where=where)


def _pressure(run: RunLayout) -> None:
    """The deployed model's molecular pressure beside the labels' on the test frames (when they carry
    stress): what a barostat will feel, measured without MD."""
    from adascale.deploy.potential import Potential
    from adascale.models.io import load_model
    from adascale.validate.pressure import pressure_check

    frames = read_frames(run.split("test"))
    if not all(frame.stress is not None and frame.pbc.all() for frame in frames):
        write_json(run.pressure, {"skipped": "the test frames carry no stress labels (or are not periodic in 3D)"})
        return
    potential = Potential(load_model(run.deployed), dtype="float64", skin=0.0)
    write_json(run.pressure, pressure_check(potential, frames, where=str(run.split("test"))))
