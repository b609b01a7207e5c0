"""The analyze and refine verbs end to end: tables, JSON files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from adascale.cli import app
from adascale.predictions import PredictionSet
from adascale.scales.analysis import analyze, refine
from adascale.scales.synthetic import synthetic_predictions
from adascale.units import KJ_MOL_NM_PER_EV_A


def test_analyze_and_refine_write_reports(tmp_path):
    synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=1).save(tmp_path / "test.npz")
    synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=2).save(tmp_path / "valid.npz")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "analyze",
            str(tmp_path / "test.npz"),
            "--fit",
            str(tmp_path / "valid.npz"),
            "--pool",
            "0,0.5,1",
            "--json",
            str(tmp_path / "a.json"),
            "--bootstrap",
            "50",
            "--granularity",
            "frame",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "oracle_continuous" in result.output and "Anchor complementarity" in result.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["settings"]["granularity"] == "frame"
    assert report["settings"]["fitted_on"].endswith("valid.npz")

    result = runner.invoke(
        app,
        [
            "refine",
            str(tmp_path / "test.npz"),
            "--fit",
            str(tmp_path / "valid.npz"),
            "--init",
            "0,1",
            "--max-size",
            "4",
            "--tol",
            "0",
            "--update",
            "gradient",
            "--units",
            "meV/A",
            "--json",
            str(tmp_path / "r.json"),
            "--bootstrap",
            "50",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["units"] == "meV/A" and report["refinement"]["update"] == "gradient"
    assert len(report["refinement"]["final"]) <= 4


def test_malformed_prediction_set_is_one_line_error(tmp_path):
    ps = synthetic_predictions(n_frames=2, atoms_per_frame=10)
    arrays = {name: getattr(ps, name) for name in ("ref", "pred", "species", "frame", "atom", "d_ion")}
    arrays["pred"] = np.concatenate([arrays["pred"], arrays["pred"][:1]])  # 3 branches, 2 scales and names
    np.savez(tmp_path / "bad.npz", scales=ps.scales, branch_names=json.dumps(ps.branch_names), metadata="{}", **arrays)
    run = subprocess.run(
        [sys.executable, "-c", "from adascale.cli import main; main()", "analyze", str(tmp_path / "bad.npz")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("error: ") and "bad.npz" in run.stderr and "field 'scales'" in run.stderr


def as_written(report: dict) -> dict:
    """A library report as its JSON file holds it (tuples become lists, numpy scalars plain numbers)."""
    return json.loads(json.dumps(report, allow_nan=False))


def test_analyze_and_refine_reports_hold_the_numbers_of_the_library_calls(tmp_path):
    """The verbs are thin: their JSON is the library's report for the same inputs and options,
    and its headline numbers are the definitions computed here by hand."""
    synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=1).save(tmp_path / "test.npz")
    synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=2).save(tmp_path / "valid.npz")
    test, valid = PredictionSet.load(tmp_path / "test.npz"), PredictionSet.load(tmp_path / "valid.npz")
    common = ["--fit", str(tmp_path / "valid.npz"), "--bootstrap", "30", "--seed", "4"]
    runner = CliRunner()
    result = runner.invoke(
        app, ["analyze", str(tmp_path / "test.npz"), *common, "--pool", "0,0.3,1", "--json", str(tmp_path / "a.json")]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "a.json").read_text())
    library = analyze(test, valid, str(tmp_path / "valid.npz"), pool="0,0.3,1", n_resamples=30, seed=4)
    assert written == as_written(library)
    loss = np.abs(test.pred - test.ref).mean(axis=-1) * KJ_MOL_NM_PER_EV_A  # (K, N) per-sample loss in kJ/mol/nm
    assert written["methods"]["fixed_s0"]["all"] == pytest.approx(loss[0].mean(), rel=1e-12)
    assert written["methods"]["fixed_s1"]["ions"] == pytest.approx(loss[1][np.isin(test.species, [11, 17])].mean(), rel=1e-12)
    assert written["methods"]["oracle_hard"]["all"] == pytest.approx(loss.min(axis=0).mean(), rel=1e-12)
    assert written["methods"]["oracle_pool"]["pool"] == [0.0, 0.3, 1.0]

    args = ["refine", str(tmp_path / "test.npz"), *common, "--max-size", "5", "--tol", "0.001", "--update", "gradient"]
    result = runner.invoke(app, [*args, "--units", "meV/A", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r.json").read_text())
    library = refine(
        test, valid, str(tmp_path / "valid.npz"), max_size=5, tol=1e-3, update="gradient", units="meV/A", n_resamples=30, seed=4
    )
    assert written == as_written(library)
    final = written["refinement"]["final"]
    assert written["refinement"]["history"][-1]["pool"] == final and written["methods"]["oracle_pool"]["pool"] == final
    assert written["methods"]["fixed_s0"]["all"] == pytest.approx(loss[0].mean() / KJ_MOL_NM_PER_EV_A * 1000, rel=1e-12)


def test_analyze_with_a_seed_null(tmp_path):
    """--null adds the library's attribution; a null set on other frames is refused in one line."""
    test = synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=1)
    test.save(tmp_path / "test.npz")
    synthetic_predictions(n_frames=8, atoms_per_frame=20, seed=2).save(tmp_path / "valid.npz")
    rng = np.random.default_rng(0)
    arrays = {name: getattr(test, name) for name in ("ref", "scales", "species", "frame", "atom", "d_ion", "branch_names")}
    null = PredictionSet(**arrays, pred=test.ref + 0.2 * rng.normal(size=test.pred.shape))
    null.save(tmp_path / "null.npz")
    args = ["analyze", str(tmp_path / "test.npz"), "--fit", str(tmp_path / "valid.npz"), "--bootstrap", "30"]
    result = CliRunner().invoke(app, [*args, "--null", str(tmp_path / "null.npz"), "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert "Seed-null attribution" in result.output
    written = json.loads((tmp_path / "a.json").read_text())
    library = analyze(
        PredictionSet.load(tmp_path / "test.npz"),
        PredictionSet.load(tmp_path / "valid.npz"),
        str(tmp_path / "valid.npz"),
        n_resamples=30,
        null=PredictionSet.load(tmp_path / "null.npz"),
        null_label=str(tmp_path / "null.npz"),
    )
    assert written == as_written(library)
    assert set(written["attribution"]) == {"hard", "continuous"}
    assert set(written["attribution"]["hard"]["close_contact"]) == {"scale_gain", "seed_gain", "attributable", "ci"}

    run = subprocess.run(
        [sys.executable, "-c", "from adascale.cli import main; main()", *args, "--null", str(tmp_path / "valid.npz")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("error: ") and "valid.npz" in run.stderr and "not the same frames" in run.stderr
