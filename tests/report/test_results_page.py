"""docs/results_page.py: every run section is stamped with its provenance; a run without one needs it given."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from adascale.report.markdown import deployed_markdown, section_markdowns

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results_page.py"


def results_page():
    spec = importlib.util.spec_from_file_location("results_page", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_report() -> dict:
    entry = {"all": 2.0, "ions": 3.0, "close_contact": 4.0, "ci": {"all": [1.5, 2.5]}}
    return {
        "units": "kJ/mol/nm",
        "counts": {"all": 10, "ions": 2, "close_contact": 1},
        "methods": {"fixed_s0": entry | {"s": 0.0}, "fixed_s1": entry | {"s": 1.0}, "deployed": entry},
        "deployed": {"model": "b", "chosen_on": "validation", "valid": {"a": {"all": 5.0}, "b": {"all": 4.0}}},
        "timings_s": {"train": 3.0, "predict": 2.0},
    }


def test_deployed_section_marks_the_chosen_candidate() -> None:
    text = deployed_markdown(tiny_report())
    assert "| b (deployed) | 4.00 |" in text and "| a | 5.00 |" in text
    assert [s.splitlines()[0] for s in section_markdowns(tiny_report())] == ["## Deployed model"]


def test_page_stamps_command_and_commit(tmp_path: Path) -> None:
    module = results_page()
    report = tiny_report() | {"provenance": {"command": "adascale run --out r", "commit": "abc1234", "adascale": "0.1.0"}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    page = module.render_page([module.load_report(tmp_path, None, None)])
    assert "## `adascale run --out r`" in page and "Commit `abc1234`" in page and "5 s wall" in page
    assert "### Methods" in page and "### Deployed model" in page


def test_run_without_provenance_needs_it_given(tmp_path: Path) -> None:
    module = results_page()
    (tmp_path / "report.json").write_text(json.dumps(tiny_report()))
    with pytest.raises(SystemExit, match="no provenance block"):
        module.load_report(tmp_path, None, None)
    page = module.render_page([module.load_report(tmp_path, "adascale run --out old", "d469131")])
    assert "Commit `d469131` (given for this run" in page
