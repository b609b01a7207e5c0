"""Speed of adascale branches: inference atoms/s and training seconds per step, on real frames.

For each model directory (or built-in config, untrained) it times, after one warm-up,
``--repeats`` calls of (a) inference: energy + forces of one frame, neighbour list included,
as ``adascale predict`` runs it; (b) one training step: forces with create_graph, an MSE
force loss and its backward. Prints one line per branch and the median figures.

    .venv/bin/python benchmarks/bench_branches.py --data runs/testbed/split/test.extxyz \
        --model runs/branches/local --model runs/branches/long_range --threads 2
    .venv/bin/python benchmarks/bench_branches.py --data test.extxyz --config local --config long_range
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def timed(function, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def branches(models: list[Path], configs: list[str], frames) -> list[tuple[str, object]]:
    """(name, branch) for trained directories and for untrained built-in configs."""
    from adascale.models.io import build_model, load_model
    from adascale.training.config import load_config
    from adascale.training.data import FrameDataset, training_species

    out = [(str(path), load_model(path)) for path in models]
    for name in configs:
        settings = load_config(name)
        kwargs = settings.model.branch_kwargs() | {
            "species": training_species(frames),
            "average_neighbours": FrameDataset(frames[:1], settings.model.cutoff).average_neighbours(),
        }
        out.append((f"config {name} (untrained)", build_model(kwargs)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="labelled frames; the first --frames are timed")
    parser.add_argument("--model", type=Path, action="append", default=[], help="trained model directory (repeatable)")
    parser.add_argument("--config", action="append", default=[], help="built-in config to time untrained (repeatable)")
    parser.add_argument("--frames", type=int, default=3, help="frames timed per branch (one call each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per frame after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import torch

    from adascale.data.frames import read_frames
    from adascale.models.batch import AtomsBatch

    torch.set_num_threads(args.threads)
    frames = read_frames(args.data)[: args.frames]
    for name, branch in branches(args.model, args.config, frames):
        infer, train = [], []
        for frame in frames:
            reference = torch.as_tensor(frame.forces, dtype=torch.float32)

            def inference(frame=frame, branch=branch):
                branch.eval()
                branch(AtomsBatch.from_frames([frame], branch.cutoff))

            def training_step(frame=frame, reference=reference, branch=branch):
                branch.train()
                batch = AtomsBatch.from_frames([frame], branch.cutoff)
                ((branch(batch)["forces"] - reference) ** 2).mean().backward()

            infer.append(len(frame) / timed(inference, args.repeats))
            train.append(timed(training_step, args.repeats))
        print(
            f"{name}: cutoff {branch.cutoff:g} Å, {statistics.median(infer):.0f} atoms/s inference, "
            f"{statistics.median(train):.3f} s per training step ({len(frames[0])} atoms, {args.threads} threads)",
            flush=True,
        )


if __name__ == "__main__":
    main()
