"""The stages of a run's seeds: every seed of an anchor with several predicted, their seed-aware
intervals, and the seed null (two seeds of one scale set against the scale pair)."""

from __future__ import annotations

import dataclasses

import numpy as np

from adascale.data.frames import read_frames
from adascale.files import write_json
from adascale.layout import RunLayout
from adascale.pipeline.config import RunConfig
from adascale.predictions import PredictionSet

#: How the seed-aware intervals are made (seeds.json, report.json ``seeds``, report.md).
SEEDS_HOW = (
    "intervals over seeds and frames: two-level bootstrap (each resample draws the seeds with replacement and, "
    "independently, whole frames; the statistic is the mean over the drawn seeds of their MAE on the drawn frames)"
)


def predict_seeds(run: RunLayout, config: RunConfig) -> None:
    """Every seed of each anchor with several, on valid and test: a PredictionSet per anchor and
    split (seed 0 first). Seed 0's forces are the run's own predictions (the numbers of its
    ``fixed_s`` rows); the other seeds' are computed on the same frames."""
    from adascale.models.inference import model_forces

    names = [anchor.name for anchor in config.anchors]
    for split in ("valid", "test"):
        anchors = PredictionSet.load(run.predictions(split))
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


def seed_intervals(run: RunLayout, config: RunConfig) -> None:
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


def seed_null_stage(run: RunLayout, config: RunConfig) -> None:
    """seed_null.json: the oracle gains of the scale pair (the anchors) set against those of seeds
    0 and 1 of the null anchor, each pair's best_global_s fitted on validation, reported on test."""
    from adascale.scales.analysis import seed_null

    anchor = config.seed_null_anchor()
    pair = {split: seed_pair(PredictionSet.load(run.seed_predictions(anchor.name, split))) for split in ("valid", "test")}
    label = f"seeds 0 and 1 of {anchor.name}"
    report = seed_null(
        PredictionSet.load(run.predictions("test")),
        pair["test"],
        PredictionSet.load(run.predictions("valid")),
        pair["valid"],
        fit_label="validation set",
        null_label=f"{label}, test set",
        null_fit_label=f"{label}, validation set",
        n_resamples=config.bootstrap,
    )
    write_json(run.seed_null, report)
