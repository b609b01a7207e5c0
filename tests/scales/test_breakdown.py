import numpy as np
import pytest

from adascale.scales.analysis import analyze, breakdown, method_losses
from adascale.scales.metrics import mae_by_species
from adascale.scales.synthetic import synthetic_predictions
from adascale.units import KJ_MOL_NM_PER_EV_A


@pytest.fixture(scope="module")
def predictions():
    return synthetic_predictions(n_frames=6, seed=3)


def test_method_losses_rebuild_every_scale_method_of_a_report(predictions):
    report = analyze(predictions, pool=np.array([0.0, 0.3, 1.0]), n_resamples=20)
    losses = method_losses(predictions, report["methods"])
    assert set(losses) == set(report["methods"])
    for name, loss in losses.items():
        assert loss.mean() * KJ_MOL_NM_PER_EV_A == pytest.approx(report["methods"][name]["all"], rel=1e-12)


def test_breakdown_adds_any_method_to_the_distance_and_species_blocks(predictions):
    losses = {"zero": np.zeros(predictions.N), "ones": np.ones(predictions.N)}
    block = breakdown(predictions, losses, units="eV/A", n_resamples=20)
    assert block["mae_by_species"]["ones"] == {"H": 1.0, "O": 1.0, "Na": 1.0, "Cl": 1.0}
    for item in block["mae_by_distance"]["ions"]:
        if item["count"]:
            assert item["mae"]["ones"] == 1.0 and item["mae"]["zero"] == 0.0


def test_mae_by_species_equals_a_masked_mean(rng):
    species = rng.choice([1, 8, 11], size=200)
    loss = rng.uniform(size=200)
    got = mae_by_species({"m": loss}, species, factor=2.0)["m"]
    for symbol, z in (("H", 1), ("O", 8), ("Na", 11)):
        assert got[symbol] == pytest.approx(2.0 * loss[species == z].mean())
