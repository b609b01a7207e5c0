"""Generation speed of the NaCl(aq) testbed: frames per second at the default box.

Runs ``generate_nacl`` with an empty temporary cache (so it really simulates) and prints
frames/s, ps/s and ns/day of sampling, with the equilibration timed separately.

    .venv/bin/python benchmarks/generate_speed.py --frames 20 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from adascale.data.testbed import NaClSettings, generate_nacl


def _seconds(settings: NaClSettings, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_nacl(settings, Path(tmp) / "out.extxyz", cache_dir=Path(tmp), threads=threads, progress=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--stride-ps", type=float, default=1.0)
    parser.add_argument("--equil-ps", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    one_frame = NaClSettings(frames=1, stride_ps=0.002, equil_ps=args.equil_ps)
    settings = NaClSettings(frames=args.frames + 1, stride_ps=args.stride_ps, equil_ps=args.equil_ps)
    setup = _seconds(one_frame, args.threads)  # solvation, minimisation, equilibration, one step
    total = _seconds(settings, args.threads)
    sampling = total - setup
    ps = args.frames * args.stride_ps
    print(f"default box {settings.box_nm} nm, {settings.ion_pairs} ion pairs, {args.threads} threads")
    print(f"setup incl. {args.equil_ps:g} ps equilibration: {setup:.1f} s")
    print(f"sampling {args.frames} frames every {args.stride_ps:g} ps: {sampling:.1f} s")
    print(f"  {args.frames / sampling:.3f} frames/s, {ps / sampling:.3f} ps/s, {ps / sampling * 86400 / 1000:.1f} ns/day")


if __name__ == "__main__":
    main()
