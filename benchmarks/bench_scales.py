"""Speed of the scale analysis: ``analyze`` + ``refine`` (to 9 scales) on 10^6 samples, 2 anchors.

Target (issue 14): at most 1.0 s together on the 2-core development machine. The synthetic
set has the testbed's shape (748-atom frames, 4 ions each); 1000 frame-bootstrap
resamples per MAE as in the CLI. Prints the median and best of ``--repeats`` runs and the
load average, since the machine is shared.

    .venv/bin/python benchmarks/bench_scales.py [--samples 1000000] [--repeats 3] [--with-fit]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from adascale.scales.analysis import analyze, refine
from adascale.scales.synthetic import synthetic_predictions

ATOMS_PER_FRAME = 748


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--with-fit", action="store_true", help="also time with a separate fit set of the same size")
    args = parser.parse_args()

    n_frames = max(1, round(args.samples / ATOMS_PER_FRAME))
    analysed = synthetic_predictions(n_frames=n_frames, atoms_per_frame=ATOMS_PER_FRAME, seed=0)
    fit = synthetic_predictions(n_frames=n_frames, atoms_per_frame=ATOMS_PER_FRAME, seed=1) if args.with_fit else None
    print(f"{analysed.N} samples, {analysed.K} anchors, {n_frames} frames; load average {os.getloadavg()[0]:.2f}")
    configurations = [("in-sample", None)] + ([("with fit set", fit)] if fit is not None else [])
    for label, fit_set in configurations:
        rows = [_time_once(analysed, fit_set) for _ in range(args.repeats)]
        for name, index in (("analyze", 0), ("refine to 9", 1), ("analyze + refine", 2)):
            values = [row[index] for row in rows]
            print(f"{label:>13} {name:>17}: median {statistics.median(values):6.3f} s  best {min(values):6.3f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _time_once(analysed, fit) -> tuple[float, float, float]:
    start = time.perf_counter()
    analyze(analysed, fit)
    middle = time.perf_counter()
    report = refine(analysed, fit, max_size=9, tol=0.0)
    end = time.perf_counter()
    assert len(report["refinement"]["final"]) == 9
    return middle - start, end - middle, end - start


if __name__ == "__main__":
    main()
