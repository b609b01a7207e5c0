"""analyze / refine reports: the DESIGN §5 JSON contract and the numbers behind it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adascale.errors import AdaScaleError
from adascale.scales.analysis import analyze, refine
from adascale.scales.oracles import anchor_errors, scale_loss
from adascale.scales.synthetic import synthetic_predictions
from adascale.units import KJ_MOL_NM_PER_EV_A, MEV_A_PER_EV_A

SUBSETS = {"all", "ions", "close_contact"}


@pytest.fixture(scope="module")
def sets():
    test = synthetic_predictions(n_frames=30, atoms_per_frame=40, seed=11)
    valid = synthetic_predictions(n_frames=30, atoms_per_frame=40, seed=12)
    return test, valid


def check_entry(entry: dict) -> None:
    assert SUBSETS <= set(entry)
    for subset in SUBSETS:
        assert isinstance(entry[subset], float) and entry[subset] >= 0
        lo, hi = entry["ci"][subset]
        assert lo <= entry[subset] <= hi


def test_analyze_json_contract(sets):
    test, valid = sets
    report = analyze(test, fit=valid, fit_label="valid.npz", n_resamples=200)
    json.dumps(report, allow_nan=False)  # strict JSON
    assert report["units"] == "kJ/mol/nm"
    masks = test.masks()
    assert report["counts"] == {name: int(mask.sum()) for name, mask in masks.items()}
    methods = report["methods"]
    assert {"fixed_s0", "fixed_s1", "best_global_s", "oracle_hard", "oracle_continuous", "oracle_pool"} <= set(methods)
    for entry in methods.values():
        check_entry(entry)
    assert 0 <= methods["best_global_s"]["s"] <= 1
    assert methods["oracle_pool"]["pool"] == [0.0, 0.5, 1.0]
    assert report["settings"]["fitted_on"] == "valid.npz"
    # the values are what they claim: fixed_s0 is anchor 0's MAE in kJ/mol/nm
    expected = np.abs(test.pred[0] - test.ref).mean(axis=1).mean() * KJ_MOL_NM_PER_EV_A
    assert methods["fixed_s0"]["all"] == pytest.approx(expected)
    for subset in SUBSETS:
        fixed = min(methods["fixed_s0"][subset], methods["fixed_s1"][subset])
        assert methods["oracle_continuous"][subset] <= methods["oracle_pool"][subset] <= methods["oracle_hard"][subset] <= fixed


def test_best_global_s_is_fitted_on_the_fit_set(sets):
    test, valid = sets
    in_sample = analyze(test, n_resamples=20)
    fitted = analyze(test, fit=valid, n_resamples=20)
    s_in, s_fit = in_sample["methods"]["best_global_s"]["s"], fitted["methods"]["best_global_s"]["s"]
    assert s_in != s_fit
    assert "in-sample" in in_sample["settings"]["fitted_on"]
    # in-sample it is the test optimum, so it cannot lose to the scale fitted elsewhere
    assert in_sample["methods"]["best_global_s"]["all"] <= fitted["methods"]["best_global_s"]["all"]
    errors = anchor_errors(test)
    assert fitted["methods"]["best_global_s"]["all"] == pytest.approx(
        scale_loss(errors, test.scales, s_fit).mean() * KJ_MOL_NM_PER_EV_A
    )


def test_complementarity_and_distance_blocks(sets):
    test, _ = sets
    report = analyze(test, pool="0,0.25,1", units="meV/A", n_resamples=20)
    assert report["units"] == "meV/A"
    assert report["methods"]["oracle_pool"]["pool"] == [0.0, 0.25, 1.0]
    assert report["methods"]["fixed_s1"]["all"] == pytest.approx(np.abs(test.pred[1] - test.ref).mean() * MEV_A_PER_EV_A)
    block = report["complementarity"]["all"]
    assert sum(block["win_fraction"].values()) == pytest.approx(1.0)
    assert sum(block["s_star"]["histogram"]["fraction"]) == pytest.approx(1.0)
    assert -1 <= block["loss_correlation"][0][1] <= 1
    bins = report["mae_by_distance"]["ions"]
    assert sum(b["count"] for b in bins) == report["counts"]["ions"]


def test_frame_granularity_routes_whole_frames(sets):
    test, _ = sets
    per_atom = analyze(test, n_resamples=20)["methods"]
    per_frame = analyze(test, granularity="frame", n_resamples=20)["methods"]
    assert per_frame["fixed_s0"] == per_atom["fixed_s0"]
    for name in ("oracle_hard", "oracle_continuous", "oracle_pool"):
        assert per_atom[name]["all"] <= per_frame[name]["all"] + 1e-9
    assert per_frame["oracle_continuous"]["all"] <= per_frame["oracle_hard"]["all"]
    with pytest.raises(AdaScaleError, match="granularity"):
        analyze(test, granularity="molecule")


def test_refine_json_contract(sets):
    test, valid = sets
    report = refine(test, fit=valid, fit_label="valid.npz", init="0,1", max_size=5, tol=0.0, n_resamples=50)
    json.dumps(report, allow_nan=False)
    block = report["refinement"]
    assert block["initial"] == [0.0, 1.0] and len(block["final"]) == 5
    history = block["history"]
    assert history[0]["pool"] == [0.0, 1.0] and history[-1]["pool"] == block["final"]
    fit_mae = [step["fit_mae"] for step in history]
    assert fit_mae == sorted(fit_mae, reverse=True)
    assert any(step["mae"] != step["fit_mae"] for step in history)  # reported on the analysed set
    assert report["methods"]["oracle_pool"]["pool"] == block["final"]
    assert report["methods"]["oracle_pool"]["all"] == pytest.approx(history[-1]["mae"])
    check_entry(report["methods"]["oracle_pool"])


def test_fit_set_with_other_anchors_is_refused(sets):
    test, _ = sets
    other = synthetic_predictions(n_frames=3, atoms_per_frame=10, n_anchors=3)
    with pytest.raises(AdaScaleError, match="other.npz: fit set has 3 anchors"):
        analyze(test, fit=other, fit_label="other.npz")
    with pytest.raises(AdaScaleError, match="fit set has 3 anchors"):
        refine(test, fit=other)
