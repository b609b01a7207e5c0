"""MD speed of the deployed model in every engine, beside the reference force field, in one run.

For each system size (the frame, and the frame tiled 2x2x2: 748 and 5,984 atoms on the
testbed) it times NVE steps with rigid water at 1 fs and prints steps/s and ns/day:

* the deployed model through ASE (``adascale.RigidWater``, velocity Verlet), the way a user's
  own ASE script runs it;
* the long-range branch alone through ASE (the speed target is relative to it);
* the deployed model inside OpenMM (``openmm.PythonForce``, SETTLE);
* the deployed model exported by ``adascale export`` (or ``--exported``) through metatomic's ASE calculator;
* the reference force field (SPC/E + Joung-Cheatham, PME 0.9 nm) in OpenMM on the CPU;
* MACE's ASE calculator (``pip install adascale[bench]`` for mace-torch), at the first size only:
  a ``--mace`` model file, or else two MACE models built here (32 channels, max_L 1, 2
  interactions, r_max 6.0 and 3.5 Å, float32) with random weights: a speed row, not an
  accuracy one (the time per step does not depend on the weights).

Then, at the first size: the NVE energy drift of the deployed model in float32 and float64
(``--drift-steps`` each) and, with ``--npt-steps``, an NPT density (OpenMM, 300 K, 1 bar)
with its block standard error beside the reference force field's own NPT density.
Torch and OpenMM's CPU platform use ``--threads`` threads (default 2; on a shared machine 1 is
much faster: with other jobs running, one call of the long-range branch took ~270 ms on 1 thread
and ~1,300 ms on 2). Writes everything to ``--json``:

    PYTHONPATH=src python benchmarks/bench_md.py --model RUN/deployed \
        --long-range RUN/branches/long_range --data RUN/data/test.extxyz --json md.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = 2  # the team convention for inference timings; --threads overrides it


def ns_per_day(steps_per_s: float, timestep_fs: float) -> float:
    return steps_per_s * timestep_fs * 86400 * 1e-6


class StepClock:
    """``on_step`` callback of the MD engines: steps/s between the first and the last call (setup excluded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, step: int, total_energy: float, temperature: float) -> None:
        self.calls.append((step, time.perf_counter()))

    def rate(self) -> float:
        (first, start), (last, end) = self.calls[0], self.calls[-1]
        return (last - first) / (end - start)


def time_ase(atoms, calculator, steps: int) -> float:
    """Steps/s of NVE with rigid water through ASE."""
    from adascale.deploy.md import run_md

    clock = StepClock()
    run_md(atoms.copy(), calculator, steps=steps, timestep_fs=1.0, seed=0, on_step=clock)
    return clock.rate()


def time_openmm_model(atoms, potential, steps: int) -> float:
    """Steps/s of NVE with SETTLE inside OpenMM, the model as a PythonForce."""
    from adascale.deploy.openmm_engine import run_openmm

    clock = StepClock()
    run_openmm(atoms.copy(), potential, steps=steps, timestep_fs=1.0, threads=THREADS, on_step=clock)
    return clock.rate()


def reference_simulation(atoms, integrator):
    """An OpenMM Simulation of the testbed's force field on ``atoms`` (a periodic water-ion box)."""
    import openmm
    from openmm import app

    from adascale.data.testbed import build_system
    from adascale.deploy.openmm_engine import water_ion_topology
    from adascale.deploy.rigid_water import find_waters, whole_waters

    waters = find_waters(atoms)
    topology = water_ion_topology(atoms, waters)
    system = build_system(topology, np.asarray(atoms.cell) * 0.1)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform, {"Threads": str(THREADS)})
    simulation.context.setPositions(whole_waters(atoms, waters) * 0.1)  # frames are wrapped; constraints are not periodic
    simulation.context.setVelocitiesToTemperature(300.0, 1)
    return simulation


def time_reference(atoms, steps: int) -> float:
    import openmm

    simulation = reference_simulation(atoms, openmm.VerletIntegrator(0.001))
    simulation.step(10)
    start = time.perf_counter()
    simulation.step(steps)
    return steps / (time.perf_counter() - start)


def reference_npt_density(atoms, picoseconds: float) -> tuple[float, float]:
    """(mean, block standard error) g/cm³ of the reference force field's NPT density, second half."""
    import openmm
    from openmm import unit

    from adascale.deploy.md import MDSummary

    simulation = reference_simulation(atoms, openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.002))
    simulation.system.addForce(openmm.MonteCarloBarostat(1.0, 300.0, 25))
    simulation.context.reinitialize(preserveState=True)
    mass = float(atoms.get_masses().sum()) * 1.66053906660e-24
    densities = []
    for _ in range(int(picoseconds / 0.1)):
        simulation.step(50)
        volume = simulation.context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer**3) * 1e-21
        densities.append(mass / volume)
    empty = np.zeros(0)
    return MDSummary(0, len(atoms), 0, empty, empty, empty, np.array(densities)).mean_density()


def exported_calculator(path: Path):
    """metatomic's ASE calculator on an exported file."""
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(path), device="cpu")


#: The benchmark's small MACE, as in ``mace_train.py``: 32x0e+32x1o (32 channels, max_L 1), 2 interactions,
#: and mace_run_train's defaults for the rest of ``--model=MACE``.
MACE_R_MAX = (6.0, 3.5)


def built_mace(atoms, r_max: float):
    """A float32 ScaleShiftMACE for the species of ``atoms`` with random weights (for timing only).

    Built as ``mace_run_train --model=MACE --num_channels=32 --max_L=1 --num_interactions=2`` would
    build it; the average neighbour count is the frame's own at ``r_max``.
    """
    import torch
    from e3nn import o3
    from mace import modules

    from adascale.data.frames import Frame
    from adascale.data.neighbours import neighbour_list

    species = sorted(set(atoms.numbers.tolist()))
    frame = Frame(atoms.numbers, atoms.positions, np.asarray(atoms.cell), np.asarray(atoms.pbc), None, None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = modules.ScaleShiftMACE(
            r_max=r_max,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=2,
            num_elements=len(species),
            hidden_irreps=o3.Irreps("32x0e+32x1o"),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.zeros(len(species)),
            avg_num_neighbors=len(neighbour_list(frame, r_max)) / len(atoms),
            atomic_numbers=species,
            correlation=3,
            gate=torch.nn.functional.silu,
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
        )
    return model.float().eval()


def mace_calculators(path: str | None, atoms) -> dict:
    """{row name: MACE's ASE calculator}: the ``--mace`` file, or random-weight MACEs built here; {} without mace-torch."""
    if importlib.util.find_spec("mace") is None:
        return {}
    from mace.calculators import MACECalculator

    if path:
        return {
            f"MACE {Path(path).name}, ASE + RigidWater": MACECalculator(model_paths=path, device="cpu", default_dtype="float32")
        }
    return {
        f"MACE r_max {r_max:g} A (random weights), ASE + RigidWater": MACECalculator(
            models=built_mace(atoms, r_max), device="cpu", default_dtype="float32"
        )
        for r_max in MACE_R_MAX
    }


def drift(atoms, model_dir: str, dtype: str, steps: int) -> dict:
    """NVE drift (meV/atom/ps, least-squares slope) and max |E - E0| (meV/atom) through ASE at 1 fs."""
    from adascale.deploy.calculator import AdaScaleCalculator
    from adascale.deploy.md import run_md

    summary = run_md(atoms.copy(), AdaScaleCalculator(model_dir, dtype=dtype), steps=steps, timestep_fs=1.0, seed=0)
    return {
        "dtype": dtype,
        "steps": steps,
        "ps": steps * 1e-3,
        "drift_meV_per_atom_ps": 1e3 * summary.drift_ev_per_atom_ps,
        "max_deviation_meV_per_atom": 1e3 * summary.max_deviation_ev_per_atom,
    }


def npt_density(atoms, model_dir: str, steps: int) -> dict:
    from adascale.deploy.openmm_engine import run_openmm
    from adascale.deploy.potential import Potential

    start = time.perf_counter()
    summary = run_openmm(
        atoms.copy(), Potential(load(model_dir)), steps=steps, timestep_fs=2.0, ensemble="npt", barostat_interval=10,
        interval=10, threads=THREADS,
    )  # fmt: skip
    mean, error = summary.mean_density()
    return {"steps": steps, "ps": steps * 2e-3, "density_g_cm3": mean, "stderr": error, "wall_s": time.perf_counter() - start}


def load(model_dir: str):
    from adascale.deploy.calculator import load_model

    return load_model(model_dir)


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the deployed model directory (RUN/deployed or any model dir)")
    parser.add_argument("--long-range", required=True, help="the long-range branch directory (the speed reference)")
    parser.add_argument("--data", required=True, help="frames; the first is the 748-atom system")
    parser.add_argument(
        "--exported", default=None, help="an `adascale export` file, timed through metatomic-ase (default: --model exported here)"
    )
    parser.add_argument(
        "--mace", default=None, help="a MACE model file (default: random-weight MACEs built here, if mace-torch is installed)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps at the small size (a quarter at the large one)")
    parser.add_argument("--drift-steps", type=int, default=0, help="NVE steps per dtype for the drift (0: skip)")
    parser.add_argument("--npt-steps", type=int, default=0, help="OpenMM NPT steps of 2 fs for the density (0: skip)")
    parser.add_argument("--reference-npt-ps", type=float, default=20.0, help="NPT picoseconds of the reference force field")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="torch and OpenMM CPU threads (1 is fastest on a busy machine)"
    )
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    THREADS = args.threads

    import torch
    from ase.io import read

    from adascale.deploy.calculator import AdaScaleCalculator
    from adascale.deploy.export import export_model
    from adascale.deploy.rigid_water import find_waters, whole_waters
    from adascale.runtime import keep_freed_memory

    torch.set_num_threads(THREADS)
    keep_freed_memory()
    frame = read(args.data, 0)
    frame.positions = whole_waters(frame, find_waters(frame))  # whole waters tile into whole, consecutive waters
    sizes = {len(frame): frame, 8 * len(frame): frame.repeat((2, 2, 2))}
    rows = []
    scratch = tempfile.TemporaryDirectory(prefix="bench_md_")  # holds the model exported here, for the whole run
    exported = Path(args.exported) if args.exported else export_model(load(args.model), Path(scratch.name) / "deployed.pt")
    for n, atoms in sizes.items():
        steps = args.steps if n == len(frame) else max(3, args.steps // 4)
        engines = {
            "deployed, ASE + adascale.RigidWater": lambda a, s: time_ase(a, AdaScaleCalculator(args.model), s),
            "long-range branch alone, ASE + RigidWater": lambda a, s: time_ase(a, AdaScaleCalculator(args.long_range), s),
            "deployed, OpenMM PythonForce + SETTLE": lambda a, s: time_openmm_model(
                a, AdaScaleCalculator(args.model).potential, s
            ),
            "reference force field, OpenMM CPU": lambda a, s: time_reference(a, 50 * s),
        }
        engines["deployed, exported metatomic (metatomic-ase + RigidWater)"] = lambda a, s: time_ase(
            a, exported_calculator(exported), s
        )
        if n == len(frame):  # MACE at 6 Å runs at ~370 atoms/s: the large size would take minutes per step
            for name, calculator in mace_calculators(args.mace, atoms).items():
                engines[name] = lambda a, s, c=calculator: time_ase(a, c, s)
        for name, timer in engines.items():
            rate = timer(atoms, steps)
            rows.append({"engine": name, "atoms": n, "steps_per_s": rate, "ns_per_day_1fs": ns_per_day(rate, 1.0)})
            print(f"{name:48s} {n:6d} atoms  {rate:8.2f} steps/s  {ns_per_day(rate, 1.0):8.3f} ns/day (1 fs)", flush=True)
    scratch.cleanup()
    result = {"rows": rows, "threads": THREADS, "model": args.model, "long_range": args.long_range, "data": args.data}
    result["exported"] = args.exported or f"{args.model} exported here by adascale.deploy.export (float32)"
    if importlib.util.find_spec("mace") is None:
        result["mace"] = "not timed: mace-torch not installed (pip install adascale[bench])"
    elif args.mace is None:
        result["mace"] = "random weights, built here (speed only): 32x0e+32x1o, 2 interactions, float32, first size only"
    if args.drift_steps:
        result["drift"] = [drift(frame, args.model, dtype, args.drift_steps) for dtype in ("float32", "float64")]
        for row in result["drift"]:
            print(
                f"NVE drift {row['dtype']}: {row['drift_meV_per_atom_ps']:+.4f} meV/atom/ps over {row['ps']:g} ps, max dev {row['max_deviation_meV_per_atom']:.4f} meV/atom"
            )
    if args.npt_steps:
        result["npt"] = npt_density(frame, args.model, args.npt_steps)
        mean, error = reference_npt_density(frame, args.reference_npt_ps)
        result["npt_reference"] = {"ps": args.reference_npt_ps, "density_g_cm3": mean, "stderr": error}
        print(
            f"NPT density, deployed model: {result['npt']['density_g_cm3']:.4f} +- {result['npt']['stderr']:.4f} g/cm3 over {result['npt']['ps']:g} ps"
        )
        print(f"NPT density, reference force field: {mean:.4f} +- {error:.4f} g/cm3 over {args.reference_npt_ps:g} ps")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
