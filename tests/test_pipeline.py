"""`adascale run` end to end on a tiny testbed with tiny models, then `evaluate` on its frames."""

import json
import shutil

import numpy as np
import pytest
from rich.console import Console

from adascale.data.frames import read_frames, write_frames
from adascale.errors import AdaScaleError
from adascale.pipeline import RunConfig, evaluate_run, load_run_config, run_pipeline

TINY_MODEL = ["model.features=8", "model.interactions=1", "training.max_epochs=1", "training.warmup_steps=1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = RunConfig(
        testbed={"frames": 8, "stride_ps": 0.02, "equil_ps": 0.1, "replicas": 1},
        split=(4, 2, 2),
        anchors=[
            {"name": "local", "config": "local", "overrides": TINY_MODEL},
            {"name": "long_range", "config": "long_range", "overrides": TINY_MODEL},
        ],
        adaptive={
            "trunk_overrides": TINY_MODEL + ["model.scale.router_hidden=[4]"],
            "router_overrides": TINY_MODEL + ["model.scale.router_hidden=[4]"],
        },
        route_train_frames=4,
        mixture_finetune_epochs=1,
        mixture_finetune_minutes=5.0,  # an upper bound only: the tiny fine-tune takes seconds
        bootstrap=20,
        threads=1,  # as the built-in configs: float sums depend on the thread count
    )
    out = tmp_path_factory.mktemp("run")
    report = run_pipeline(out, config, Console(quiet=True))
    return out, config, report


def test_report_keeps_the_public_contract(tiny_run):
    out, _, report = tiny_run
    assert report == json.loads((out / "report.json").read_text())
    assert report["units"] == "kJ/mol/nm"
    assert set(report["counts"]) == {"all", "ions", "close_contact"}
    for name in ("fixed_s0", "fixed_s1", "best_global_s", "oracle_hard", "oracle_continuous", "oracle_pool", "router", "mixture"):
        assert set(report["methods"][name]) >= {"all", "ions", "close_contact"}, name
    assert "s" in report["methods"]["best_global_s"] and "pool" in report["methods"]["oracle_pool"]
    assert report["methods"]["oracle_pool"]["pool"] == report["refinement"]["final"]
    assert {"initial", "final", "history"} <= set(report["refinement"])
    methods = report["methods"]
    assert methods["oracle_continuous"]["all"] <= methods["oracle_pool"]["all"] <= methods["oracle_hard"]["all"] + 1e-9
    text = (out / "report.md").read_text()
    assert "## Beside the paper" in text and "| router |" in text
    for path in report["plots"].values():
        assert (out / path).read_bytes()[:4] == b"\x89PNG"


def test_the_deployed_model_is_the_best_candidate_on_validation(tiny_run):
    from adascale.deploy.calculator import AdaScaleCalculator

    out, _, report = tiny_run
    deployed = report["deployed"]
    assert set(deployed["valid"]) == {"local", "long_range", "mixture", "scale_conditioned"}
    assert deployed["model"] == min(deployed["valid"], key=lambda name: deployed["valid"][name]["all"])
    assert report["methods"]["deployed"]["model"] == deployed["model"]
    for name in ("scale_conditioned", "scale_conditioned_best_s"):
        assert report["methods"][name]["all"] > 0
    assert 0 <= report["scale_conditioned"]["scale_distribution"]["all"]["mean"] <= 1
    frames = read_frames(out / "data" / "test.extxyz")
    atoms = frames[0].to_atoms()
    atoms.calc = AdaScaleCalculator.from_run(out)
    assert np.isfinite(atoms.get_forces()).all()
    assert "| deployed |" in (out / "report.md").read_text()


def test_a_second_run_reuses_every_stage(tiny_run):
    out, config, report = tiny_run
    markers = {p.name: p.read_text() for p in (out / ".stages").iterdir()}
    assert run_pipeline(out, config, Console(quiet=True))["methods"] == report["methods"]
    assert {p.name: p.read_text() for p in (out / ".stages").iterdir()} == markers


def test_the_same_seed_gives_the_same_report(tiny_run, tmp_path):
    """A second run from the same frames (the seeded testbed is reused, not regenerated) retrains every
    model, budgeted by steps and epochs: every method's numbers and every training outcome are identical."""
    out, config, report = tiny_run
    again = tmp_path / "again"
    shutil.copytree(out / "data", again / "data")
    for stage in ("testbed", "split"):
        (again / ".stages").mkdir(exist_ok=True)
        shutil.copy(out / ".stages" / f"{stage}.json", again / ".stages")
    second = run_pipeline(again, config, Console(quiet=True))
    assert second["timings_s"]["train_local"] > 0  # really retrained
    assert second["methods"] == report["methods"]
    assert second["training"] == report["training"]
    adaptive = config.adaptive.name
    assert set(report["training"]) == {"local", "long_range", f"{adaptive}_trunk", adaptive, "mixture_finetune"}
    assert not any(outcome["budget_hit"] for outcome in report["training"].values())
    assert "Warning:" not in (out / "report.md").read_text()


def test_report_md_warns_when_a_wall_clock_bound_cut_training(tiny_run):
    from adascale.report.markdown import render_markdown

    _, _, report = tiny_run
    cut = json.loads(json.dumps(report))
    cut["training"]["long_range"] |= {"budget_hit": True, "stopped": "time_budget", "steps": 3}
    text = render_markdown(cut)
    assert "**Warning:** training of long_range was cut by its wall-clock bound after 3 steps" in text
    assert text.count("**Warning:**") == 1


def test_evaluate_reports_new_frames_without_refitting(tiny_run):
    out, _, report = tiny_run
    again = evaluate_run(out, out / "data" / "test.extxyz")
    for name in ("fixed_s0", "fixed_s1", "oracle_continuous", "router", "deployed", "scale_conditioned"):
        assert again["methods"][name]["all"] == pytest.approx(report["methods"][name]["all"], rel=1e-5), name
    assert again["methods"]["best_global_s"]["s"] == report["methods"]["best_global_s"]["s"]


def test_evaluate_refuses_species_the_run_never_saw(tiny_run, tmp_path):
    out, _, _ = tiny_run
    frames = read_frames(out / "data" / "test.extxyz")
    frames[0].numbers = np.where(frames[0].numbers == 11, 19, frames[0].numbers)  # Na -> K
    write_frames(tmp_path / "potassium.extxyz", frames)
    with pytest.raises(AdaScaleError, match=r"potassium.extxyz.*frame 0.*19"):
        evaluate_run(out, tmp_path / "potassium.extxyz")


def test_run_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("split: [1, 2]\nanchors: []\n")
    with pytest.raises(AdaScaleError, match=r"run.yaml: invalid run config: .*split"):
        load_run_config(bad)
    assert load_run_config(None, quick=True).split == (40, 10, 10)
