"""The deployment stages of a run: choosing the model to deploy (validation MAE, ties broken by
speed), its molecular pressure on the test frames, and its validation in MD."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from adascale.data.frames import Frame, read_frames
from adascale.data.regimes import SUBSETS
from adascale.errors import AdaScaleError
from adascale.files import write_json
from adascale.layout import RunLayout
from adascale.pipeline.config import RunConfig


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


def deploy(run: RunLayout, config: RunConfig) -> None:
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


def validate_deployed(run: RunLayout, config: RunConfig) -> None:
    """``adascale validate`` of the deployed model from a test frame, into ``validate/``."""
    from adascale.validate import validate_model
    from adascale.validate.settings import ValidateSettings

    settings = ValidateSettings.model_validate(config.validation.model_dump(exclude={"frame"}))
    frames = read_frames(run.split("test"))
    if not -len(frames) <= config.validation.frame < len(frames):
        raise AdaScaleError(f"validate.frame {config.validation.frame}: the test set has {len(frames)} frames")
    where = f"{run.split('test')}: frame {config.validation.frame}"
    validate_model(run.deployed, frames[config.validation.frame], settings, out_dir=run.validation, where=where)


def pressure(run: RunLayout) -> None:
    """The deployed model's molecular pressure beside the labels' on the test frames (when they carry
    stress): what a barostat will feel, measured without MD."""
    from adascale.deploy.calculator import load_model
    from adascale.deploy.potential import Potential
    from adascale.validate.pressure import pressure_check

    frames = read_frames(run.split("test"))
    if not all(frame.stress is not None and frame.pbc.all() for frame in frames):
        write_json(run.pressure, {"skipped": "the test frames carry no stress labels (or are not periodic in 3D)"})
        return
    potential = Potential(load_model(run.deployed), dtype="float64", skin=0.0)
    write_json(run.pressure, pressure_check(potential, frames, where=str(run.split("test"))))
