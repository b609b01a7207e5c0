"""The analyze and refine verbs end to end: tables, JSON files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from adascale.cli import app
from adascale.scales.synthetic import synthetic_predictions


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
