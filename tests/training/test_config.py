"""The YAML training config: built-ins, overrides, validation errors, documentation."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from adascale.errors import AdaScaleError
from adascale.training.config import BUILTIN_CONFIGS, TrainConfig, _nested_model, config_to_yaml, describe_settings, load_config


def test_builtin_defaults_are_the_two_anchors():
    local, long_range = load_config("local"), load_config("long_range")
    assert local.model.cutoff == 3.5 and local.model.electrostatics is None
    assert long_range.model.cutoff == 6.0 and long_range.model.electrostatics is not None
    assert local.model.branch_kwargs()["kind"] == "painn"
    assert long_range.model.branch_kwargs()["kind"] == "painn_long_range"


def test_overrides_apply_dotted_keys_with_yaml_values(tmp_path):
    config = load_config(
        "long_range", ["model.cutoff=5.0", "training.time_budget_minutes=2.5", "model.electrostatics.method=pme"]
    )
    assert config.model.cutoff == 5.0 and config.training.time_budget_minutes == 2.5
    assert config.model.electrostatics.method == "pme"
    assert load_config("long_range", ["model.electrostatics=null"]).model.electrostatics is None
    # a YAML file round-trips through config_to_yaml
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.cutoff=-1"], r"model\.cutoff: Input should be greater than 0"),
        (["model.colour=red"], r"model\.colour: Extra inputs are not permitted"),
        (["training.force_loss=hinge"], r"training\.force_loss: Input should be 'mse', 'l1' or 'huber'"),
        (["model.electrostatics.exclusion_outer=7.0"], r"exclusion_outer \(7\.0\) <= cutoff \(6\.0\)"),
        (["cutoff"], r"must look like key=value"),
        (["model.cutoff.x=1"], r"'cutoff' is not a block"),
    ],
)
def test_invalid_settings_give_one_line_errors(overrides, message):
    with pytest.raises(AdaScaleError, match=message) as info:
        load_config("long_range", overrides)
    assert "\n" not in str(info.value)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(AdaScaleError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(AdaScaleError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(AdaScaleError, match="must be a mapping"):
        load_config(bad)


def test_every_field_is_documented():
    def fields(model: type[BaseModel]):
        for name, field in model.model_fields.items():
            yield name, field
            nested = _nested_model(field.annotation)
            if nested is not None:
                yield from fields(nested)

    for name, field in fields(TrainConfig):
        assert field.description and len(field.description) > 10, name
    text = describe_settings()
    assert "model.electrostatics.exclusion_inner (default 2.0)" in text
    assert "training.time_budget_minutes (default None)" in text
    assert set(BUILTIN_CONFIGS) == {"local", "long_range", "scale_conditioned"}
