"""adascale export: the TorchScript metatomic model gives AdaScaleCalculator's numbers through metatomic's ASE calculator."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from metatensor.torch import Labels, TensorBlock
from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model
from metatomic_ase import MetatomicCalculator
from typer.testing import CliRunner

from adascale.cli import app
from adascale.data.neighbours import neighbour_list
from adascale.deploy.calculator import AdaScaleCalculator
from adascale.deploy.export import export_model
from adascale.errors import AdaScaleError
from adascale.models.io import save_model
from adascale.models.long_range import LongRangePaiNN
from adascale.models.scale_conditioned import ScaleConditionedPaiNN
from deploy.tiny_models import make_branches
from models.branch_checks import SPECIES, water_ion_frame
from models.test_scale_conditioned import make_model as make_scale_conditioned


def _pme_branch() -> LongRangePaiNN:
    torch.manual_seed(3)
    model = LongRangePaiNN(SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=10.0, electrostatics="pme")
    model.set_energy_statistics([-1.0, -2.0, -3.0, -4.0], 0.5)
    with torch.no_grad():
        model.species_charge.copy_(torch.tensor([0.4, -0.8, 1.0, -1.0]))  # charges large enough to matter
    return model.double().eval()


def _pme_branch_with_walls() -> LongRangePaiNN:
    """The PME branch with pair walls that bite in the test frame (onsets above many of its distances)."""
    pairs = [[a, b, 1.2 if (a, b) == (1, 8) else 2.6] for a, b in itertools.combinations_with_replacement(SPECIES, 2)]
    torch.manual_seed(3)
    model = LongRangePaiNN(
        SPECIES, cutoff=4.0, features=8, interactions=1, average_neighbours=10.0, electrostatics="pme",
        repulsion={"pairs": pairs, "energy": 0.5, "width": 0.3},
    )  # fmt: skip
    model.set_energy_statistics([-1.0, -2.0, -3.0, -4.0], 0.5)
    return model.double().eval()


def _routed_scale_conditioned() -> ScaleConditionedPaiNN:
    """Router mode with random router weights, so atoms sit at different radii."""
    model = make_scale_conditioned(scale_mode="router", fixed_scale=0.5)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.router.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return model


def _model(which: str, mixture):
    builders = {
        "local": lambda: make_branches()[0],
        "long_range": lambda: make_branches()[1],
        "pme": _pme_branch,
        "walls": _pme_branch_with_walls,
        "scale_conditioned": _routed_scale_conditioned,
        "mixture": lambda: mixture,
    }
    return builders[which]()


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("which", ["local", "long_range", "pme", "walls", "scale_conditioned", "mixture"])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 1e-5)])
def test_exported_model_equals_the_calculator(which, dtype, tolerance, mixture, periodic_frame, tmp_path):
    model = _model(which, mixture)
    path = export_model(model, tmp_path / "model.pt", dtype=dtype)
    atoms = periodic_frame.to_atoms()
    atoms.rattle(0.05, seed=1)
    reference, exported = atoms.copy(), atoms.copy()
    reference.calc = AdaScaleCalculator(model, dtype=dtype)
    exported.calc = MetatomicCalculator(str(path), device="cpu")  # float32 files prefer cuda: compare on the CPU
    assert exported.get_potential_energy() == pytest.approx(reference.get_potential_energy(), rel=tolerance)
    assert _relative(exported.get_forces(), reference.get_forces()) < tolerance
    assert _relative(exported.get_stress(), reference.get_stress()) < tolerance
    assert _relative(exported.get_potential_energies(), reference.get_potential_energies()) < tolerance


def test_exported_long_range_model_on_a_molecule(tmp_path):
    """No cell: the direct Coulomb sum, through a non-periodic metatomic system."""
    model = make_branches()[1]
    path = export_model(model, tmp_path / "model.pt", dtype="float64")
    atoms = water_ion_frame(4, 1, 6.0, seed=2, periodic=False).to_atoms()
    reference, exported = atoms.copy(), atoms.copy()
    reference.calc = AdaScaleCalculator(model, dtype="float64")
    exported.calc = MetatomicCalculator(str(path), device="cpu")
    assert exported.get_potential_energy() == pytest.approx(reference.get_potential_energy(), rel=1e-9)
    assert _relative(exported.get_forces(), reference.get_forces()) < 1e-9


def _system_with_neighbours(frame, options) -> System:
    """A metatomic System of ``frame`` (float64) with the neighbour list ``options`` asks for, built with vesin."""
    pairs = neighbour_list(frame, options.cutoff)
    system = System(
        types=torch.as_tensor(frame.numbers, dtype=torch.int32),
        positions=torch.as_tensor(frame.positions),
        cell=torch.as_tensor(np.asarray(frame.cell, dtype=float)),
        pbc=torch.as_tensor(np.asarray(frame.pbc, dtype=bool)),
    )
    samples = np.column_stack([pairs.i, pairs.j, pairs.shifts]).astype(np.int32)
    vectors = frame.positions[pairs.j] - frame.positions[pairs.i] + pairs.shifts @ np.asarray(frame.cell)
    block = TensorBlock(
        values=torch.as_tensor(vectors)[:, :, None],
        samples=Labels(["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"], torch.as_tensor(samples)),
        components=[Labels(["xyz"], torch.arange(3, dtype=torch.int32)[:, None])],
        properties=Labels(["distance"], torch.zeros(1, 1, dtype=torch.int32)),
    )
    system.add_neighbor_list(options, block)
    return system


def test_exported_model_refuses_species_it_was_not_trained_on(mixture, periodic_frame, tmp_path):
    path = export_model(mixture, tmp_path / "model.pt", dtype="float64")
    atoms = periodic_frame.to_atoms()
    atoms.numbers[0] = 3  # lithium
    atoms.calc = MetatomicCalculator(str(path))
    with pytest.raises(Exception, match="does not support the atomic type '3'"):  # metatomic's ASE calculator checks
        atoms.get_potential_energy()

    # the AtomisticModel refuses them for every engine, and the compiled model inside has its own check
    exported = load_atomistic_model(str(path))
    frame = replace(periodic_frame, numbers=atoms.numbers.copy())
    system = _system_with_neighbours(frame, exported.requested_neighbor_lists()[0])
    options = ModelEvaluationOptions(length_unit="angstrom", outputs={"energy": ModelOutput(unit="eV", sample_kind="system")})
    with pytest.raises(Exception, match="does not support the atomic type '3'"):
        exported([system], options, check_consistency=False)
    with pytest.raises(
        Exception, match=r"atomic number\(s\) \[3\] unknown to this model \(trained on species \[1, 8, 11, 17\]\)"
    ):
        exported.module([system], options.outputs, None)
    system = _system_with_neighbours(periodic_frame, exported.requested_neighbor_lists()[0])
    energy = exported([system], options, check_consistency=True)["energy"].block().values
    assert float(energy) == pytest.approx(
        AdaScaleCalculator(mixture, dtype="float64").get_potential_energy(periodic_frame.to_atoms())
    )


def test_capabilities_describe_the_model(mixture, tmp_path):
    local, long_range = make_branches()
    for model, expected_range in [(local, 3.0 + 1 * 3.0), (long_range, math.inf), (mixture, math.inf)]:
        capabilities = load_atomistic_model(str(export_model(model, tmp_path / "m.pt"))).capabilities()
        assert capabilities.atomic_types == list(SPECIES)
        assert capabilities.interaction_range == expected_range
        assert capabilities.length_unit == "angstrom" and capabilities.dtype == "float32"
        assert capabilities.outputs["energy"].unit == "eV"
    with pytest.raises(AdaScaleError, match="dtype must be one of"):
        export_model(local, tmp_path / "m.pt", dtype="float16")


def test_export_verb_writes_a_loadable_file_and_refuses_bad_arguments(tmp_path):
    model_dir = tmp_path / "local"
    save_model(model_dir, make_branches()[0])
    out = tmp_path / "out" / "local.pt"
    result = CliRunner().invoke(app, ["export", "--model", str(model_dir), "--out", str(out), "--dtype", "float64"])
    assert result.exit_code == 0, result.output
    assert load_atomistic_model(str(out)).capabilities().dtype == "float64"
    assert [p.name for p in out.parent.iterdir()] == ["local.pt"]  # written atomically: no temporary left

    both = CliRunner().invoke(app, ["export", "--model", str(model_dir), "--run", str(tmp_path), "--out", str(out)])
    assert both.exit_code != 0 and "exactly one of --model DIR or --run DIR" in str(both.exception)
    (tmp_path / "run" / ".stages").mkdir(parents=True)
    run_dir = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "run"), "--out", str(out)])
    assert "is a run directory" in str(run_dir.exception)
    no_deployed = CliRunner().invoke(app, ["export", "--run", str(tmp_path / "run"), "--out", str(out)])
    assert "has no deployed model" in str(no_deployed.exception)


def test_exported_model_gives_energies_of_selected_atoms(mixture, periodic_frame, tmp_path):
    """Domain decomposition asks for some atoms only: their per-atom energies, or the sum of them."""
    exported = load_atomistic_model(str(export_model(mixture, tmp_path / "model.pt", dtype="float64")))
    system = _system_with_neighbours(periodic_frame, exported.requested_neighbor_lists()[0])
    reference = AdaScaleCalculator(mixture, dtype="float64").get_potential_energies(periodic_frame.to_atoms())
    chosen = Labels(["system", "atom"], torch.tensor([[0, 1], [0, 5], [0, 17]], dtype=torch.int32))
    per_atom = exported.module([system], {"energy": ModelOutput(unit="eV", sample_kind="atom")}, chosen)["energy"].block()
    assert per_atom.samples.values.tolist() == [[0, 1], [0, 5], [0, 17]]
    np.testing.assert_allclose(per_atom.values[:, 0].numpy(), reference[[1, 5, 17]], rtol=1e-10)
    total = exported.module([system], {"energy": ModelOutput(unit="eV", sample_kind="system")}, chosen)["energy"].block()
    assert float(total.values) == pytest.approx(reference[[1, 5, 17]].sum(), rel=1e-10)
