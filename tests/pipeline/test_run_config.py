"""Run configs: every one is the default run with a YAML merged onto it, so no setting has two defaults."""

from __future__ import annotations

import pytest

from adascale.errors import AdaScaleError
from adascale.pipeline import load_run_config, run_config
from adascale.training.mixture import MixtureSettings


def test_a_partial_yaml_keeps_the_default_runs_values(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("split: [10, 5, 5]\ntestbed:\n  frames: 20\nmixture:\n  finetune_epochs: 4\n")
    default, config = load_run_config("default"), load_run_config(partial)
    assert config.split == (10, 5, 5) and config.testbed.frames == 20 and config.mixture.finetune_epochs == 4
    assert config.testbed.box_nm == default.testbed.box_nm and config.anchors == default.anchors
    assert config.adaptive == default.adaptive and config.mixture.train_frames == default.mixture.train_frames
    assert load_run_config(None) == default == run_config()


def test_the_mixture_verb_and_the_default_run_share_the_mixture_defaults():
    assert load_run_config("default").mixture == MixtureSettings()


def test_the_builtin_configs_keep_their_values():
    quick, paper, amoeba = (load_run_config(name) for name in ("quick", "paper", "amoeba"))
    assert (quick.mixture.train_frames, quick.mixture.finetune_epochs, quick.mixture.finetune_frames) == (10, 1, 5)
    assert (paper.mixture.train_frames, paper.mixture.finetune_minutes, paper.route_train_frames) == (100, 10.0, 100)
    assert amoeba.adaptive is None and amoeba.testbed.labels == "amoeba" and amoeba.mixture.finetune_frames == 20


def test_overrides_and_errors_name_the_field(tmp_path):
    config = load_run_config("quick", overrides=["mixture.finetune_epochs=3", "adaptive=null"])
    assert config.mixture.finetune_epochs == 3 and config.adaptive is None
    with pytest.raises(AdaScaleError, match=r"built-in run_quick.yaml: invalid run config: mixture.train_frames"):
        load_run_config("quick", overrides=["mixture.train_frames=0"])
    with pytest.raises(AdaScaleError, match=r"invalid run config: mixture_finetune_epochs: Extra inputs"):
        run_config({"mixture_finetune_epochs": 2})


def test_a_run_directory_named_like_a_builtin_config_does_not_shadow_it(tmp_path, monkeypatch):
    """`adascale run` beside a run directory called `default` (or `quick`) still reads the built-in config;
    a YAML *file* of that name is the user's own and wins."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "quick").mkdir()
    assert load_run_config(None) == load_run_config("default") == run_config()
    assert load_run_config(None, quick=True) == load_run_config("quick")
    (tmp_path / "paper").write_text("refine_max_size: 4\n")
    assert load_run_config("paper").refine_max_size == 4
