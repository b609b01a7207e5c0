"""`adascale run` end to end on a tiny testbed with tiny models, then `evaluate` on its frames."""

import hashlib
import json
import shutil

import ase.io
import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.frames import read_frames, write_frames
from adascale.data.user_data import file_sha256
from adascale.errors import AdaScaleError
from adascale.pipeline import deployment, evaluate_run, load_run_config, run_config, run_pipeline, stages, with_data
from adascale.predictions import PredictionSet

pytestmark = pytest.mark.integration  # whole pipeline runs (the tiny_run fixture)

TINY_MODEL = ["model.features=8", "model.interactions=1", "training.max_epochs=1", "training.warmup_steps=1"]


#: The default run made tiny (merged onto it, as every run config is).
TINY_RUN = {
    "testbed": {"frames": 8, "stride_ps": 0.02, "equil_ps": 0.1, "replicas": 1},
    "split": (4, 2, 2),
    "anchors": [
        {"name": "local", "config": "local", "overrides": TINY_MODEL},
        {"name": "long_range", "config": "long_range", "overrides": TINY_MODEL, "seeds": 2},
    ],
    "adaptive": {  # not in the default run: the whole block
        "name": "scale_conditioned",
        "config": "scale_conditioned",
        "grid_points": 3,
        "trunk_overrides": TINY_MODEL + ["model.scale.router_hidden=[4]"],
        "router_overrides": TINY_MODEL + ["model.scale.router_hidden=[4]"],
    },
    "route_train_frames": 4,
    "mixture": {"train_frames": 4, "finetune_epochs": 1, "finetune_minutes": 5.0},  # minutes: an upper bound only
    "bootstrap": 20,
    "threads": 1,  # as the built-in configs: float sums depend on the thread count
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = run_config(TINY_RUN)
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
    assert set(report["provenance"]) == {"command", "adascale", "commit", "finished", "machine"}
    pressure = report["pressure"]  # the testbed's frames carry stress: the deployed model's barostat pressure
    assert pressure["frames"] == 2 and len(pressure["model"]) == 2 and "## Pressure on the test frames" in text
    for path in report["plots"].values():
        assert (out / path).read_bytes()[:4] == b"\x89PNG"


def test_the_deployed_model_is_the_fastest_of_those_tied_on_validation(tiny_run):
    from adascale.deploy.calculator import AdaScaleCalculator

    out, _, report = tiny_run
    deployed = report["deployed"]
    assert set(deployed["valid"]) == {"local", "long_range", "mixture", "scale_conditioned"}
    best = min(deployed["valid"], key=lambda name: deployed["valid"][name]["all"])
    assert deployed["best_on_validation"] == best and deployed["tied"][0] == best
    assert deployed["model"] in deployed["tied"] and deployed["reason"] and "fastest force call" in deployed["chosen_on"]
    candidates = {item["name"]: item for item in deployed["candidates"]}
    assert set(candidates) == set(deployed["valid"]) and all(item["seconds_per_call"] > 0 for item in candidates.values())
    if best == "long_range":  # an anchor with two seeds ties on its interval over seeds and frames
        assert candidates[best]["ci"] == report["seeds"]["long_range"]["valid"]["ci"]["all"]
    upper = max(candidates[best]["mae"], candidates[best]["ci"][1])
    within = [name for name, item in candidates.items() if item["mae"] <= upper]
    assert deployed["tied"] == sorted(within, key=lambda name: (candidates[name]["mae"], name))
    fastest = min(candidates[name]["seconds_per_call"] for name in deployed["tied"])
    assert candidates[deployed["model"]]["seconds_per_call"] <= 1.05 * fastest
    assert report["methods"]["deployed"]["model"] == deployed["model"]
    for name in ("scale_conditioned", "scale_conditioned_best_s"):
        assert report["methods"][name]["all"] > 0
    assert 0 <= report["scale_conditioned"]["scale_distribution"]["all"]["mean"] <= 1
    frames = read_frames(out / "data" / "test.extxyz")
    atoms = frames[0].to_atoms()
    atoms.calc = AdaScaleCalculator.from_run(out)
    assert np.isfinite(atoms.get_forces()).all()
    text = (out / "report.md").read_text()
    assert "| deployed |" in text and f"`{deployed['model']}`, chosen on validation force MAE" in text
    assert f"| {deployed['model']} (deployed) |" in text and deployed["reason"] in text


def test_seeds_carry_intervals_over_seeds_and_frames(tiny_run):
    """long_range trains two seeds: both models are kept, seed 0 stays the anchor's fixed_s1 row,
    and its interval over seeds and frames is seed_frame_bootstrap of both seeds' test losses."""
    from adascale.scales.metrics import seed_frame_bootstrap
    from adascale.training.config import load_config
    from adascale.units import force_unit_factor

    out, config, report = tiny_run
    block, entry = report["seeds"]["long_range"], report["methods"]["fixed_s1"]
    assert block["seeds"] == entry["seeds"] == 2 and block["models"] == ["long_range", "long_range_seed1"]
    trained = [load_config(out / "branches" / name / "config.yaml").training.seed for name in block["models"]]
    assert trained[1] == trained[0] + 1
    test = PredictionSet.load(out / "predictions" / "test.npz")
    seed1 = PredictionSet.load(out / "predictions" / "seeds" / "long_range_test.npz")
    np.testing.assert_array_equal(seed1.pred[0], test.pred[1])  # seed 0 is the anchor's own prediction
    assert seed1.branch_names == block["models"] and not np.array_equal(seed1.pred[1], seed1.pred[0])
    losses = list(np.abs(seed1.pred - seed1.ref[None]).mean(axis=-1))
    expected = seed_frame_bootstrap(
        losses, test.frame, test.masks(), n_resamples=config.bootstrap, factor=force_unit_factor(config.units)
    )
    for subset in ("all", "ions", "close_contact"):
        assert block["per_seed"][subset] == expected["per_seed"][subset]
        assert block["per_seed"][subset][0] == pytest.approx(entry[subset], rel=1e-9)  # fixed_s1 stays seed 0's MAE
        assert block["mean"][subset] == pytest.approx(np.mean(block["per_seed"][subset]), rel=1e-9)
        assert block["ci"][subset] == entry["seed_ci"][subset] == expected["ci"][subset]
    low, high = block["ci"]["all"]
    assert low <= min(block["per_seed"]["all"]) and max(block["per_seed"]["all"]) <= high
    assert "two-level bootstrap" in block["how"]
    assert "intervals over seeds and frames: two-level bootstrap" in (out / "report.md").read_text()
    assert "## Seeds" in (out / "report.md").read_text()


def test_the_report_holds_the_seed_null_attribution(tiny_run):
    out, _, report = tiny_run
    assert set(report["attribution"]) == {"hard", "continuous"}
    for block in report["attribution"].values():
        assert set(block) == {"all", "ions", "close_contact"}
        for item in block.values():
            assert set(item) == {"scale_gain", "seed_gain", "attributable", "ci"}
        item = block["all"]
        assert item["attributable"] == pytest.approx(item["scale_gain"] - item["seed_gain"], abs=1e-12)
    settings = report["settings"]["attribution"]
    assert settings["null_branch_names"] == ["long_range", "long_range_seed1"]
    assert settings["fitted_on"] == "validation set" and "validation set" in settings["null_fitted_on"]
    text = (out / "report.md").read_text()
    assert text.count(", seed null |") == 4 and "attributable_vs_distance" in report["plots"]


def test_a_second_run_reuses_every_stage(tiny_run):
    out, config, report = tiny_run
    markers = {p.name: p.read_text() for p in (out / ".stages").iterdir()}
    assert run_pipeline(out, config, Console(quiet=True))["methods"] == report["methods"]
    assert {p.name: p.read_text() for p in (out / ".stages").iterdir()} == markers


def test_adding_a_seed_trains_only_that_seed(tiny_run, tmp_path):
    out, config, report = tiny_run
    shutil.copytree(out, tmp_path / "run")
    anchors = [config.anchors[0], config.anchors[1].model_copy(update={"seeds": 3})]
    again = run_pipeline(tmp_path / "run", config.model_copy(update={"anchors": anchors}), Console(quiet=True))
    trained = {stage for stage, seconds in again["timings_s"].items() if stage.startswith("train") and seconds > 0}
    assert trained == {"train_long_range_seed2"}
    assert again["seeds"]["long_range"]["per_seed"]["all"][:2] == report["seeds"]["long_range"]["per_seed"]["all"]
    assert (tmp_path / "run" / "branches" / "long_range_seed2").is_dir()
    assert again["attribution"] == report["attribution"]  # the null pair stays seeds 0 and 1


def test_the_same_seed_gives_the_same_report(tiny_run, tmp_path, monkeypatch):
    """A second run from the same frames (the seeded testbed is reused, not regenerated) retrains every
    model, budgeted by steps and epochs: every method's numbers and every training outcome are identical
    (the deployment timings, the one machine-dependent input, replayed from the first run)."""
    out, config, report = tiny_run
    timings = {item["name"]: item["seconds_per_call"] for item in report["deployed"]["candidates"]}
    names = iter(report["deployed"]["valid"])  # deploy times its candidates in this order
    monkeypatch.setattr(deployment, "force_call_seconds", lambda directory, frame: timings[next(names)])
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
    assert set(report["training"]) == {
        "local",
        "long_range",
        "long_range_seed1",
        f"{adaptive}_trunk",
        adaptive,
        "mixture_finetune",
    }
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


def test_evaluate_command_runs_the_models_on_the_device_it_is_given(tiny_run, tmp_path):
    out, _, report = tiny_run
    args = ["evaluate", "--run", str(out), "--data", str(out / "data" / "test.extxyz"), "--json", str(tmp_path / "e.json")]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "e.json").read_text())
    for name in ("fixed_s1", "mixture", "deployed"):
        assert again["methods"][name]["all"] == pytest.approx(report["methods"][name]["all"], rel=1e-5), name
    if not torch.cuda.is_available():
        refused = CliRunner().invoke(app, [*args, "--device", "cuda"])
        assert refused.exit_code != 0 and "CUDA is not available" in str(refused.exception or refused.output)


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


# `adascale run --data`: the same pipeline on the user's own frames (here the tiny run's frames, relabelled under other keys).


def _user_file(frames, path, forces_key="dft_forces", energy_key="dft_energy"):
    """Frames written with their labels under other keys, as a user's DFT file might hold them."""
    images = []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.arrays[forces_key] = atoms.arrays.pop("REF_forces")
        atoms.info[energy_key] = atoms.info.pop("REF_energy")
        atoms.info.pop("REF_stress", None)  # as many DFT files: no stress
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def _data_config(config, **data):
    return with_data(config, **({"forces_key": "dft_forces", "energy_key": "dft_energy", "split": (0.5, 0.25, 0.25)} | data))


@pytest.fixture(scope="module")
def data_run(tiny_run, tmp_path_factory):
    out, config, _ = tiny_run
    root = tmp_path_factory.mktemp("data_run")
    source = _user_file(read_frames(out / "data" / "frames.extxyz"), root / "dft.extxyz")
    config = _data_config(config, file=str(source))
    report = run_pipeline(root / "run", config, Console(quiet=True))
    return root, source, config, report


def test_run_on_user_data_reports_its_file_and_hash(data_run):
    root, source, _, report = data_run
    assert report["data"]["files"] == [
        {"role": "all", "path": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    ]
    assert report["data"]["frames"] == {"train": 4, "valid": 2, "test": 2}
    text = (root / "run" / "report.md").read_text()  # no stress labels: the run says what the stress loss saw
    assert "local trained on stress for 0 of 4 training frames" in text and "skipped" in report["pressure"]
    assert report["counts"]["all"] == 2 * 748 and report["counts"]["ions"] == 2 * 10
    for name in ("fixed_s0", "fixed_s1", "oracle_continuous", "router", "mixture"):
        assert np.isfinite(report["methods"][name]["all"])
    labels = read_frames(source, forces_key="dft_forces", energy_key="dft_energy")[6:]
    np.testing.assert_array_equal(read_frames(root / "run" / "data" / "test.extxyz")[1].forces, labels[1].forces)
    again = evaluate_run(root / "run", root / "run" / "data" / "test.extxyz")
    assert again["methods"]["fixed_s1"]["all"] == pytest.approx(report["methods"]["fixed_s1"]["all"], rel=1e-6)


def test_a_changed_data_file_invalidates_the_cache(data_run, monkeypatch):
    root, source, config, _ = data_run
    frames = read_frames(source, forces_key="dft_forces", energy_key="dft_energy")
    frames[0].forces = frames[0].forces * 1.01
    _user_file(frames, root / "dft.extxyz")

    def training(*args):
        raise RuntimeError("retraining")

    monkeypatch.setattr(stages, "_train", training)
    with pytest.raises(RuntimeError, match="retraining"):
        run_pipeline(root / "run", config, Console(quiet=True))
    assert json.loads((root / "run" / "data" / "source.json").read_text())["files"][0]["sha256"] == file_sha256(source)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("few", r"few.extxyz: 3 frames are too few for the split 0.5,0.25,0.25 \(train 3, valid 0, test 0 frames\)"),
        ("no_forces", r"no_forces.extxyz: frame 2: field 'dft_forces': no forces found"),
        ("ions", r"ions.extxyz: ion species K absent from the data \(species present: H, O, Na, Cl\)"),
        ("untrained", r"untrained.extxyz: the split leaves species K untrained: they occur in the test set"),
        ("small_cell", r"small_cell.extxyz: frame 5: field 'cell': cell too small for cutoff 6 Å"),
    ],
)
def test_run_on_bad_user_data_fails_before_any_training(tiny_run, tmp_path, monkeypatch, case, match):
    out, config, _ = tiny_run
    frames = read_frames(out / "data" / "frames.extxyz")
    path = tmp_path / f"{case}.extxyz"
    data = {"file": str(path)}
    if case == "few":
        frames = frames[:3]
    elif case == "ions":
        data["ion_species"] = ["Na", "K"]
    elif case == "untrained":
        for frame in frames[6:]:
            frame.numbers = np.where(frame.numbers == 11, 19, frame.numbers)  # Na -> K in the test block only
    elif case == "small_cell":
        frames[5].cell = frames[5].cell * 0.55
    _user_file(frames, path)
    if case == "no_forces":
        images = ase.io.read(path, index=":")
        del images[2].arrays["dft_forces"]
        ase.io.write(path, images, format="extxyz")

    def training(*args):
        raise AssertionError("training started")

    monkeypatch.setattr(stages, "_train", training)
    with pytest.raises(AdaScaleError, match=match) as error:
        run_pipeline(tmp_path / "run", _data_config(config, **data), Console(quiet=True))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "data" / "train.extxyz").exists()


def test_data_settings_need_one_source_and_sane_fractions(tiny_run):
    _, config, _ = tiny_run
    with pytest.raises(AdaScaleError, match=r"--data: .*either `file` .* or all three of `train`, `valid` and `test`"):
        with_data(config, file="a.extxyz", train="b.extxyz")
    with pytest.raises(AdaScaleError, match=r"--data: .*either `file`"):
        with_data(config, train="b.extxyz", valid="c.extxyz")
    with pytest.raises(AdaScaleError, match=r"split fractions must be positive and add up to at most 1"):
        with_data(config, file="a.extxyz", split=(0.8, 0.2, 0.1))
    with pytest.raises(AdaScaleError, match=r"unknown ion species symbol"):
        with_data(config, file="a.extxyz", ion_species=["Xx"])


def test_a_species_missing_from_small_valid_and_test_sets_runs_through(tmp_path):
    """The run's species come from its training split: 13 frames whose training part holds Na, Cl
    and K and whose validation and test frames hold only Cl and K run through every stage (the
    router features of each split once took their species from that split and the route stage died)."""
    from training.tiny_data import labelled_frames

    frames = labelled_frames(13)
    for index, frame in enumerate(frames):
        if index < 5 or index >= 11:  # Na -> K: K in the training part, no Na in the last two frames
            frame.numbers = np.where(frame.numbers == 11, 19, frame.numbers)
    write_frames(tmp_path / "mixed.extxyz", frames)
    small = ["model.cutoff=3.5", *TINY_MODEL]  # the 7 Å boxes allow a 3.5 Å cutoff
    config = run_config(
        {
            "anchors": [
                {"name": "local", "config": "local", "overrides": small},
                {"name": "long_range", "config": "long_range", "overrides": small},
            ],
            "adaptive": None,
            "route_train_frames": 4,
            "mixture": {"train_frames": 4, "valid_frames": 1, "finetune_epochs": 1, "finetune_frames": 2},
            "bootstrap": 20,
            "threads": 1,
        }
    )
    config = with_data(config, file=str(tmp_path / "mixed.extxyz"), split=(0.8, 0.1, 0.1))
    report = run_pipeline(tmp_path / "run", config, Console(quiet=True))
    assert report["data"]["frames"] == {"train": 11, "valid": 1, "test": 1}
    for split in ("train", "valid", "test"):
        spec = PredictionSet.load(tmp_path / "run" / "predictions" / f"{split}.npz").metadata["router_feature_spec"]
        assert spec["species"] == [1, 8, 11, 17, 19], split
    assert np.isfinite(report["methods"]["router"]["all"]) and np.isfinite(report["methods"]["mixture"]["all"])
    again = evaluate_run(tmp_path / "run", tmp_path / "run" / "data" / "test.extxyz")
    assert again["methods"]["router"]["all"] == pytest.approx(report["methods"]["router"]["all"], rel=1e-6)


def test_a_validate_block_validates_the_deployed_model_and_reports_it(tiny_run, tmp_path):
    """Adding `validate:` to a finished run reruns only validate and report; report.json and report.md show it."""
    out, config, report = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    protocol = {"npt_equil_ps": 0.02, "npt_prod_ps": 0.2, "nvt_equil_ps": 0.02, "nvt_prod_ps": 0.2, "window_ps": 0.1}
    validated = run_config({**TINY_RUN, "validate": {"protocol": protocol, "threads": 1}})
    console = Console(record=True, width=200)
    again = run_pipeline(run, validated, console)
    log = console.export_text()
    assert "✓ validate" in log and "• train_long_range: cached" in log
    validation = again["validation"]
    assert set(validation) >= {"state", "protocol", "density", "rdf", "diffusion", "stability"} and "curves" not in validation
    assert validation["density"]["reference"]["mean"] > 0.5 and validation["protocol"]["nvt_prod_ps"] == 0.2
    assert json.loads((run / "validate" / "validate.json").read_text())["density"] == validation["density"]
    assert "## Validation in MD (the deployed model)" in (run / "report.md").read_text()
    assert again["methods"]["deployed"] == report["methods"]["deployed"]
