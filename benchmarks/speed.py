"""Inference speed and peak memory of one model on one system size, in a process of its own.

The system is one frame tiled ``multiple`` times with ASE's ``Atoms.repeat`` (same
concentration, ``multiple`` times the atoms). One warm-up call, then ``repeats`` timed
energy+force+stress calls, each from scratch (neighbour list included, as in MD); the figure is
atoms per second of the fastest call (other work on a shared machine only ever slows a call
down), with the median beside it. Memory is this process's peak resident set
(``ru_maxrss``): run one process per (model, size) so peaks do not mix. Like ``adascale md``, it
first lets glibc keep freed memory (:func:`adascale.runtime.keep_freed_memory`; the same for every
model, ``--default-malloc`` to measure without), so large systems are not timed paying page
faults for tensors re-mapped on every call. Writes one JSON file:

    PYTHONPATH=benchmarks python benchmarks/speed.py \
        --calculator calculators:mace_calculator:M.model --data test.extxyz --multiple 4 --json x4.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

#: What every model computes per call: MACE's calculator always computes the stress of a
#: periodic cell, so the others are asked for it too.
PROPERTIES = ["energy", "forces", "stress"]


def tiling(multiple: int) -> tuple[int, int, int]:
    """Repeats (a, b, c) with a*b*c == multiple, as even as possible (8 -> (2, 2, 2), 4 -> (2, 2, 1))."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    best = (multiple, 1, 1)
    for a in range(1, multiple + 1):
        for b in range(1, multiple // a + 1):
            if multiple % (a * b) == 0:
                shape = tuple(sorted((a, b, multiple // (a * b)), reverse=True))
                if max(shape) < max(best) or (max(shape) == max(best) and min(shape) > min(best)):
                    best = shape
    return best


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(calculator, atoms, repeats: int) -> dict[str, float]:
    """Time ``repeats`` calls after one warm-up; seconds and atoms/s of the fastest call (the
    least disturbed by other work on a shared machine), the median beside it, peak memory."""
    from ase.calculators.calculator import all_changes

    rss_loaded = peak_rss_mb()
    calculator.calculate(atoms, PROPERTIES, all_changes)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        calculator.calculate(atoms, PROPERTIES, all_changes)
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    return {
        "seconds_per_call": best,
        "median_seconds_per_call": statistics.median(seconds),
        "atoms_per_s": len(atoms) / best,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_increase_mb": peak_rss_mb() - rss_loaded,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calculator", required=True, help="module:factory[:arg] returning an ASE calculator")
    parser.add_argument("--data", type=Path, required=True, help="frames file; the system is one frame tiled")
    parser.add_argument("--frame", type=int, default=0, help="index of the frame to tile")
    parser.add_argument("--multiple", type=int, default=1, help="number of copies of the frame (1, 2, 4, 8, ...)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, required=True, help="where to write the result")
    parser.add_argument(
        "--default-malloc", action="store_true",
        help="keep glibc's default of mapping and unmapping every block above 32 MiB (page faults on every call)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import ase.io
    import torch

    from adascale.models.inference import load_calculator
    from adascale.runtime import keep_freed_memory

    torch.set_num_threads(args.threads)
    kept = not args.default_malloc and keep_freed_memory()  # as adascale md does; the same for every model
    atoms = ase.io.read(args.data, index=args.frame)
    atoms = atoms.repeat(tiling(args.multiple))
    calculator = load_calculator(args.calculator)
    result = {
        "calculator": args.calculator, "multiple": args.multiple, "n_atoms": len(atoms), "threads": args.threads,
        "malloc": "freed memory kept" if kept else "glibc default",
    }  # fmt: skip
    result.update(measure(calculator, atoms, args.repeats))
    result["load_average_1min"] = os.getloadavg()[0]  # other work on the machine slows every figure
    from adascale.files import write_json

    write_json(args.json, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
