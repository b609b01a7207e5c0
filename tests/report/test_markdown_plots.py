import json

import pytest

from adascale.report.markdown import PAPER_ALL, best_fixed, render_markdown
from adascale.report.plots import write_plots
from adascale.scales.analysis import analyze, refine
from adascale.scales.synthetic import synthetic_predictions


@pytest.fixture(scope="module")
def report():
    test = synthetic_predictions(n_frames=8, seed=1)
    fit = synthetic_predictions(n_frames=8, seed=2)
    report = analyze(test, fit=fit, fit_label="valid", n_resamples=50)
    report["refinement"] = refine(test, fit=fit, fit_label="valid", max_size=5, n_resamples=50)["refinement"]
    report["mae_by_species"] = {"fixed_s0": {"O": 1.0, "Na": 2.0}, "oracle_continuous": {"O": 0.5, "Na": None}}
    return json.loads(json.dumps(report))  # as read back from report.json


def test_markdown_has_every_method_and_the_paper_beside_ours(report):
    text = render_markdown(report)
    for name in report["methods"]:
        assert f"| {name} |" in text
    for paper_value in PAPER_ALL.values():
        assert f"{paper_value:.2f}" in text
    assert f"{best_fixed(report, 'all'):.2f}" in text
    assert "## Pool refinement" in text
    assert "+4.25 %" in text  # the paper's hard-oracle gain: (399.65 - 382.67) / 399.65


def test_best_fixed_is_the_lowest_fixed_scale(report):
    fixed = [e["all"] for n, e in report["methods"].items() if n.startswith("fixed_s") or n == "best_global_s"]
    assert best_fixed(report, "all") == min(fixed)
    assert best_fixed(report, "all") > report["methods"]["oracle_continuous"]["all"]


def test_plots_are_written_as_png(report, tmp_path):
    written = write_plots(report, tmp_path)
    assert set(written) == {"mae_vs_distance", "refinement", "s_star_histogram", "mae_by_species"}
    for name in written.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_skip_what_the_report_lacks(report, tmp_path):
    partial = {k: v for k, v in report.items() if k not in ("refinement", "mae_by_species")}
    assert set(write_plots(partial, tmp_path)) == {"mae_vs_distance", "s_star_histogram"}


def test_seed_null_row_and_attributable_plot(tmp_path):
    test = synthetic_predictions(n_frames=8, seed=1)
    null = synthetic_predictions(n_frames=8, seed=1)
    null.pred = null.pred[::-1].copy()  # the same frames, the two models swapped: nothing attributable
    report = json.loads(json.dumps(analyze(test, null=null, n_resamples=50)))
    text = render_markdown(report)
    rows = [line for line in text.splitlines() if "seed null" in line]
    assert [row.split(" |")[0] for row in rows] == [
        "| oracle_hard, seed null",
        "| oracle_hard, close contact, seed null",
        "| oracle_continuous, seed null",
        "| oracle_continuous, close contact, seed null",
    ]
    seed_gain = report["attribution"]["continuous"]["all"]["seed_gain"]
    assert f"seed pair {100 * seed_gain:+.1f} %; attributable to scale +0.0 % [" in rows[2]
    assert "Seed null:" in text
    written = write_plots(report, tmp_path)
    assert "attributable_vs_distance" in written
    assert (tmp_path / written["attributable_vs_distance"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seed null" not in render_markdown({k: v for k, v in report.items() if k != "attribution"})
