"""Each run setting reruns exactly the stages whose output depends on it (the stage keys of `run`).

The stages run through the real StageRunner with stand-in work that records what ran, so the
test checks the cache mechanics and the keys together without training anything.
"""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel
from rich.console import Console

from adascale.pipeline import RunConfig, load_run_config, stage_plan
from adascale.pipeline.cache import StageRunner

BASE = load_run_config(None, quick=True)
ANCHORS = [a.name for a in BASE.anchors]  # local, long_range (2 seeds)
ADAPTIVE = ["train_adaptive_trunk", "train_adaptive", "adaptive_analysis"]
SEEDS = ["predict_seeds", "seeds", "seed_null"]
ALL = [
    "testbed",
    "split",
    f"train_{ANCHORS[0]}",
    f"train_{ANCHORS[1]}",
    f"train_{ANCHORS[1]}_seed1",
    "predict",
    "refine",
    "route",
    "mixture",
    *ADAPTIVE,
    *SEEDS,
    "deploy",
    "pressure",
    "report",
]
AFTER_TRAINING = ["predict", "refine", "route", "mixture", *SEEDS, "deploy", "pressure", "report"]

#: Every leaf setting of RunConfig -> the stages a change of it must rerun (anchors.<i>.<field>
#: per anchor; testbed.* for every testbed field). A new setting fails the completeness test
#: below until it is declared here and in stage_plan.
RERUNS: dict[str, list[str]] = {
    "testbed.*": ALL,
    "split": ALL[1:],
    "anchors.0.seeds": [f"train_{ANCHORS[0]}_seed1", *SEEDS, "deploy", "pressure", "report"],  # a second seed: only it trains
    "anchors.1.seeds": [f"train_{ANCHORS[1]}_seed2", *SEEDS, "deploy", "pressure", "report"],  # a third seed
    "anchors.0.*": [f"train_{ANCHORS[0]}", *AFTER_TRAINING],
    "anchors.1.*": [f"train_{ANCHORS[1]}", f"train_{ANCHORS[1]}_seed1", *AFTER_TRAINING],
    "route_train_frames": [
        "predict",
        "refine",
        "route",
        *SEEDS,
        "deploy",
        "pressure",
        "report",
    ],  # the routers' frames, not the mixture's
    "refine_max_size": ["refine", "route", "adaptive_analysis", "report"],
    "refine_tol": ["refine", "route", "adaptive_analysis", "report"],
    "mixture.*": ["mixture", "deploy", "pressure", "report"],
    "adaptive.name": [*ADAPTIVE, "deploy", "pressure", "report"],
    "adaptive.config": [*ADAPTIVE, "deploy", "pressure", "report"],
    "adaptive.trunk_overrides": [*ADAPTIVE, "deploy", "pressure", "report"],
    "adaptive.router_overrides": ADAPTIVE[1:] + ["deploy", "pressure", "report"],
    "adaptive.grid_points": ["adaptive_analysis", "report"],
    "units": ["refine", "route", "mixture", "adaptive_analysis", "seeds", "deploy", "pressure", "report"],  # gains are fractions
    "bootstrap": ["refine", "route", "mixture", "adaptive_analysis", "seeds", "seed_null", "deploy", "pressure", "report"],
    "null_anchor": [],  # named as the default picks it (long_range): the same seed null, nothing reruns
    "threads": [],
    "validation": ["validate", "report"],  # a validate block adds the stage
    "data": ALL[1:],  # the user's frames replace the testbed: from the split on
}


def leaf_settings(value: object, prefix: str = "") -> dict[str, object]:
    """Dotted path -> value of every leaf setting of a config (lists of models by index)."""
    if isinstance(value, BaseModel):
        items = {name: getattr(value, name) for name in type(value).model_fields}
    elif dataclasses.is_dataclass(value):
        items = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
        items = {str(i): item for i, item in enumerate(value)}
    else:
        return {prefix: value}
    out: dict[str, object] = {}
    for name, item in items.items():
        out.update(leaf_settings(item, f"{prefix}.{name}" if prefix else name))
    return out


def changed(path: str, value: object) -> object:
    """Another valid value of a setting."""
    if path.endswith(".config"):
        return "long_range" if value == "local" else "local"
    if path.endswith("overrides"):
        return [*value, "model.features=16"]
    if path == "units":
        return "meV/A"
    if path == "null_anchor":
        return ANCHORS[1]
    if path == "mixture.dtype":
        return "float64"
    if path == "mixture.feature_radii":
        return (2.5, 3.5)
    if path == "validation":
        return {"protocol": {"npt_prod_ps": 1.0, "nvt_prod_ps": 1.0}}
    if path == "testbed.labels":
        return "amoeba"
    if path == "testbed.volume_span":
        return value / 2
    if path == "data":
        return {"file": __file__}  # stand-in work never reads it; its bytes key the split
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if value is None:
        return 2
    if isinstance(value, str):
        return value + "_2"
    if isinstance(value, tuple):
        return (value[0] - 1, *value[1:])
    if isinstance(value, dict):
        return {**value, 11: 2.0}
    raise TypeError(f"{path}: no change rule for {value!r}")


def with_setting(config: RunConfig, path: str, value: object) -> RunConfig:
    raw = config.model_dump()
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return RunConfig.model_validate(raw)


def expected(path: str) -> list[str]:
    for pattern, stages in RERUNS.items():
        if pattern == path or (pattern.endswith(".*") and path.startswith(pattern[:-1])):
            return stages
    raise KeyError(path)


def reran(root, config: RunConfig) -> list[str]:
    """Run every stage of ``config``'s plan under ``root`` with stand-in work; the names that ran."""
    plan = stage_plan(config)
    return StageRunner(root, Console(quiet=True)).run_plan(plan, {name: lambda: None for name in plan})


def test_every_setting_is_declared():
    for path in leaf_settings(BASE):
        expected(path)  # KeyError: a new run setting: declare what it reruns in RERUNS and stage_plan


@pytest.mark.parametrize("path", sorted(leaf_settings(BASE)))
def test_a_changed_setting_reruns_exactly_its_stages(tmp_path, path):
    assert reran(tmp_path, BASE) == ALL
    assert reran(tmp_path, BASE) == []
    value = changed(path, leaf_settings(BASE)[path])
    other = with_setting(BASE, path, value)
    stages = expected(path)
    if path.endswith(".name"):  # a renamed anchor is a new training stage (each seed's too)
        stages = [stage.replace(f"train_{value[:-2]}", f"train_{value}") for stage in stages]
    assert reran(tmp_path, other) == stages
    assert reran(tmp_path, other) == []


def test_editing_a_training_config_file_retrains_that_anchor(tmp_path):
    config_file = tmp_path / "local.yaml"
    config_file.write_text("model:\n  features: 16\n")
    config = with_setting(BASE, "anchors.0.config", str(config_file))
    root = tmp_path / "run"
    assert reran(root, config) == ALL
    config_file.write_text("model:\n  features: 24\n")
    assert reran(root, config) == [f"train_{ANCHORS[0]}", *AFTER_TRAINING]


def test_user_data_is_keyed_by_its_content_not_its_path(tmp_path):
    first, copy = tmp_path / "a.extxyz", tmp_path / "b.extxyz"
    first.write_text("frames v1")
    copy.write_text("frames v1")
    config = with_setting(BASE, "data", {"file": str(first)})
    assert reran(tmp_path / "run", config) == ALL[1:]
    assert reran(tmp_path / "run", with_setting(BASE, "data", {"file": str(copy)})) == []
    first.write_text("frames v2")
    assert reran(tmp_path / "run", config) == ALL[1:]


def test_the_mixture_router_radii_rule_enters_the_mixture_key(tmp_path, monkeypatch):
    """The default router radii are not a run setting but a rule of the mixture's: changing it must refit."""
    from adascale.training import mixture

    assert reran(tmp_path, BASE) == ALL
    monkeypatch.setattr(mixture, "FEATURE_RADII_FRACTIONS", (0.5, 1.0))
    assert reran(tmp_path, BASE) == ["mixture", "deploy", "pressure", "report"]


def test_seed_zero_keeps_its_key_and_the_null_anchor_reruns_only_the_seed_null(tmp_path):
    """Seed 0 of an anchor is the anchor: a run cached before its anchor trained seeds reuses it;
    choosing another anchor's seeds for the null recomputes the null and the report only."""
    single = with_setting(BASE, "anchors.1.seeds", 1)
    assert reran(tmp_path, single) == [s for s in ALL if s not in (f"train_{ANCHORS[1]}_seed1", *SEEDS)]
    assert reran(tmp_path, BASE) == [f"train_{ANCHORS[1]}_seed1", *SEEDS, "deploy", "pressure", "report"]
    both = with_setting(BASE, "anchors.0.seeds", 2)
    assert both.seed_null_anchor().name == ANCHORS[1]  # the longest range with two seeds
    assert reran(tmp_path, both) == [f"train_{ANCHORS[0]}_seed1", *SEEDS, "deploy", "pressure", "report"]
    assert reran(tmp_path, with_setting(both, "null_anchor", ANCHORS[0])) == ["seed_null", "report"]


def test_seed_k_trains_with_the_configs_seed_plus_k():
    from adascale.training.config import load_config

    anchor = with_setting(BASE, "anchors.1.seeds", 3).anchors[1]
    base = load_config(anchor.config, anchor.overrides).training.seed
    assert anchor.model_names() == [ANCHORS[1], f"{ANCHORS[1]}_seed1", f"{ANCHORS[1]}_seed2"]
    assert [load_config(anchor.config, anchor.seed_overrides(k)).training.seed for k in range(3)] == [base, base + 1, base + 2]


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"null_anchor": "local"}, r"null_anchor: 'local' is not an anchor with at least 2 seeds \(those: long_range\)"),
        (
            {"anchors": [{"name": "a", "config": "local", "seeds": 2}, {"name": "a_seed1", "config": "long_range"}]},
            r"model names repeat: a_seed1",
        ),
    ],
)
def test_seed_settings_that_cannot_work_are_refused(update, match):
    from adascale.errors import AdaScaleError
    from adascale.pipeline import run_config

    with pytest.raises(AdaScaleError, match=rf"run config: invalid run config: .*{match}"):
        run_config(update)
