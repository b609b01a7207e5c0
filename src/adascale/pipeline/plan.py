"""The stage plan of ``adascale run``: each stage with every run setting its output depends on and
the earlier stages whose files it reads (its cache key, :mod:`adascale.pipeline.cache`)."""

from __future__ import annotations

import dataclasses

from adascale.pipeline.cache import Stage
from adascale.pipeline.config import AdaptiveSettings, RunConfig


def stage_plan(config: RunConfig) -> dict[str, Stage]:
    """The stages of ``run`` in order: the one place a stage declares what its key holds.

    A training stage holds its resolved training config (so editing a config YAML it names
    retrains it); seed k >= 1 of an anchor is a stage of its own (``train_<name>_seed<k>``), so
    adding a seed trains only that seed. ``threads`` enters no stage: it changes speed, not
    results (deploy's choice among tied candidates times them, but its key holds only the rule).
    """
    from adascale.scales.ties import DEFAULT_REPEATS, DEFAULT_SPEED_TOLERANCE, DEFAULT_WARMUP
    from adascale.training.config import load_config
    from adascale.training.mixture import FEATURE_RADII_FRACTIONS

    stats = {"units": config.units, "bootstrap": config.bootstrap}  # every MAE and interval a stage reports
    trained = tuple(f"train_{a.name}" for a in config.anchors)
    adaptive = () if config.adaptive is None else ("train_adaptive", "adaptive_analysis")
    seeded = _seed_plan(config, stats)
    validated = () if config.validation is None else ("validate",)
    if config.data is None:
        first = {
            "testbed": Stage(dataclasses.asdict(config.testbed)),
            "split": Stage({"split": list(config.split)}, after=("testbed",)),
        }
    else:  # the user's frames by content, and the anchors (their cutoffs and energies are checked)
        first = {"split": Stage(data_stage_settings(config))}
    return {
        **first,
        **{
            f"train_{name}": Stage(
                {
                    "anchor": a.model_dump(exclude={"seeds"}),  # seed 0 keeps its key when seeds are added
                    **({"seed": seed} if seed else {}),
                    "resolved": load_config(a.config, a.seed_overrides(seed)).model_dump(mode="json"),
                },
                after=("split",),
            )
            for a in config.anchors
            for seed, name in enumerate(a.model_names())
        },
        "predict": Stage({"route_train_frames": config.route_train_frames}, after=("split", *trained)),
        "refine": Stage({"max_size": config.refine_max_size, "tol": config.refine_tol, **stats}, after=("predict",)),
        "route": Stage(stats, after=("predict", "refine")),
        "mixture": Stage(
            {
                "settings": config.mixture.model_dump(mode="json"),
                "feature_radii_fractions": list(FEATURE_RADII_FRACTIONS),  # of the largest branch cutoff
                **stats,
            },
            after=("split", *trained),
        ),
        **({} if config.adaptive is None else _adaptive_plan(config, config.adaptive, stats)),
        **seeded,
        "deploy": Stage(
            {**stats, "speed_tolerance": DEFAULT_SPEED_TOLERANCE, "timing": [DEFAULT_REPEATS, DEFAULT_WARMUP]},
            after=("split", "mixture", *trained, *adaptive[:1], *(("seeds",) if seeded else ())),
        ),
        "pressure": Stage({}, after=("split", "deploy")),
        **(
            {} if config.validation is None else {"validate": Stage(config.validation.model_dump(mode="json"), after=("deploy",))}
        ),
        "report": Stage(
            stats, after=("predict", "refine", "route", "mixture", "deploy", "pressure", *adaptive, *seeded, *validated)
        ),
    }


def _seed_plan(config: RunConfig, stats: dict) -> dict[str, Stage]:
    """The stages of the anchors with several seeds (none without): every seed on valid and test,
    their intervals over seeds and frames, and the seed null of the scale analysis."""
    seeded = config.seeded_anchors()
    if not seeded:
        return {}
    null = config.seed_null_anchor()
    extra = tuple(f"train_{name}" for anchor in seeded for name in anchor.model_names()[1:])
    return {
        "predict_seeds": Stage({"anchors": [a.name for a in seeded]}, after=("predict", *extra)),
        "seeds": Stage(stats, after=("predict_seeds",)),
        # gains are fractions: no unit enters; the scale pair is the anchors' (predict)
        "seed_null": Stage({"anchor": null.name, "bootstrap": config.bootstrap}, after=("predict", "predict_seeds")),
    }


def _adaptive_plan(config: RunConfig, adaptive: AdaptiveSettings, stats: dict) -> dict[str, Stage]:
    """The scale-conditioned model's stages: trunk, router phase, its scale analysis."""
    from adascale.training.config import load_config

    trunk = load_config(adaptive.config, adaptive.trunk_overrides).model_dump(mode="json")
    router = load_config(adaptive.config, adaptive.router_overrides).model_dump(mode="json")
    refine = {"max_size": config.refine_max_size, "tol": config.refine_tol}
    return {
        "train_adaptive_trunk": Stage(
            {"settings": adaptive.model_dump(include={"name", "config", "trunk_overrides"}), "resolved": trunk}, after=("split",)
        ),
        "train_adaptive": Stage({"resolved": router}, after=("train_adaptive_trunk",)),
        "adaptive_analysis": Stage({**refine, **stats, "grid_points": adaptive.grid_points}, after=("train_adaptive",)),
    }


def data_stage_settings(config: RunConfig) -> dict:
    """The ``split`` stage's key for the user's data: its settings and each file's SHA-256 (not its path)."""
    settings = config.data.model_dump(exclude={"file", "train", "valid", "test"})
    settings["sha256"] = config.data.hashes()
    settings["anchors"] = [anchor.model_dump() for anchor in config.anchors]
    return settings
