"""Train a small MACE with mace-torch's own trainer under a wall-clock budget.

mace-torch 0.3.16 has no time limit, only ``--max_num_epochs``, and it validates and
checkpoints only at the end of an epoch (about 15 min per 400-frame epoch at r_max 3.5 Å
and 80 min at 6.0 Å on this 2-core CPU). So this script runs ``mace.cli.run_train``
unchanged except for hooks on its training-loop functions (:class:`Budget`):

* during an epoch, training batches stop being fed once the time left is less than a
  validation takes, so the trainer validates and checkpoints what it has learnt so far
  and that validation ends within the budget;
* the next epoch, begun without time left, ends the training loop, and run_train carries
  on as after a normal finish: it reloads the best checkpoint and saves ``NAME.model``.

The budget covers the optimisation (training steps and the validations after each epoch),
counted from the start of the first epoch; data loading, mace's validation of the untrained
model before it and the model saving after training are not counted (all are timed in
``train_info.json``). Run it in its own process (it imports mace, which sets
an environment variable on import):

    python benchmarks/mace_train.py --train train.extxyz --valid valid.extxyz \
        --r-max 3.5 --budget-min 15 --out-dir runs/bench/mace_r3.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: The benchmark's small MACE: 32 channels, max_L 1 (32x0e+32x1o), 2 interactions.
MACE_ARCH = {"num_channels": 32, "max_L": 1, "num_interactions": 2}


class _BudgetSpent(Exception):
    """Raised at the start of an epoch with no time left for it: ends mace's training loop."""


class Budget:
    """Wall-clock budget of mace's training loop, filled in as training runs.

    The clock starts with the first epoch. Training batches stop being fed once the time
    left is less than the last validation took, so the validation that ends the epoch
    finishes within the budget, as adascale's trainer does. The first epoch always ends in
    a validation and a checkpoint, even if the budget runs out inside it, so there is
    always a model to save.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = self.deadline = self.end = float("nan")
        self.loop_start = float("nan")
        self.validation_s = 0.0  # duration of the last validation
        self.steps = self.epochs = 0

    def time_left(self) -> bool:
        """True while a training step and then a validation still fit before the deadline."""
        return time.monotonic() + self.validation_s < self.deadline

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        for batch in loader:
            if not self.time_left():
                return
            yield batch

    def summary(self) -> dict[str, float]:
        """``train_s``: first epoch to the end of the last validation (the budgeted time);
        ``loop_s``: mace's whole loop, with its validation of the untrained model."""
        return {
            "train_s": round(self.end - self.start, 1),
            "loop_s": round(self.end - self.loop_start, 1),
            "epochs": self.epochs,
            "steps": self.steps,
            "validation_s": round(self.validation_s, 1),
        }


def install_budget(budget_s: float) -> Budget:
    """Hook mace's trainer (its loop, epoch, step and evaluate functions) to run under a budget."""
    import mace.tools

    train_module = sys.modules["mace.tools.train"]  # the module: mace.tools.train is the function
    run_train_loop, train_one_epoch = train_module.train, train_module.train_one_epoch
    take_step, evaluate = train_module.take_step, train_module.evaluate
    budget = Budget(budget_s)

    def budgeted_train(*args: Any, **kwargs: Any) -> None:
        budget.loop_start = time.monotonic()
        try:
            run_train_loop(*args, **kwargs)
        except _BudgetSpent:
            pass
        budget.end = time.monotonic()

    def budgeted_epoch(*args: Any, data_loader: Iterable[Any], **kwargs: Any) -> None:
        if budget.epochs == 0:
            budget.start = time.monotonic()
            budget.deadline = budget.start + budget.budget_s
        elif not budget.time_left():
            raise _BudgetSpent
        budget.epochs += 1
        train_one_epoch(*args, data_loader=budget.batches(data_loader), **kwargs)

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        budget.steps += 1
        return take_step(*args, **kwargs)

    def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        result = evaluate(*args, **kwargs)
        budget.validation_s = time.monotonic() - start
        return result

    train_module.train_one_epoch = budgeted_epoch
    train_module.take_step = counted_step
    train_module.evaluate = timed_evaluate
    mace.tools.train = budgeted_train  # what run_train calls as tools.train(...)
    return budget


def mace_arguments(
    train: Path, valid: Path, out_dir: Path, name: str, r_max: float, seed: int, batch_size: int, max_epochs: int
) -> list[str]:
    """Command-line arguments of ``mace_run_train`` for the benchmark's small MACE on CPU."""
    return [
        f"--name={name}",
        f"--work_dir={out_dir}",
        f"--train_file={train}",
        f"--valid_file={valid}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--E0s=average",
        "--model=MACE",
        f"--num_channels={MACE_ARCH['num_channels']}",
        f"--max_L={MACE_ARCH['max_L']}",
        f"--num_interactions={MACE_ARCH['num_interactions']}",
        f"--r_max={r_max}",
        "--default_dtype=float32",
        "--device=cpu",
        f"--seed={seed}",
        f"--batch_size={batch_size}",
        "--valid_batch_size=10",
        f"--max_num_epochs={max_epochs}",
        "--eval_interval=1",
        "--error_table=PerAtomMAE",
        "--skip_evaluate_heads=train,valid",  # the benchmark evaluates on test itself
        "--plot=False",
        "--save_cpu",
        "--num_workers=0",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="training frames (extxyz, REF_forces/REF_energy)")
    parser.add_argument("--valid", type=Path, required=True, help="validation frames")
    parser.add_argument("--r-max", type=float, required=True, help="MACE cutoff in Å")
    parser.add_argument("--budget-min", type=float, default=15.0, help="wall-clock budget of the training loop")
    parser.add_argument("--out-dir", type=Path, required=True, help="work dir; the model is OUT_DIR/NAME.model")
    parser.add_argument("--name", default="mace", help="model name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=10_000, help="upper bound; the budget normally stops first")
    args = parser.parse_args(argv)

    import torch
    from mace import tools
    from mace.cli.run_train import run

    from adascale.files import write_json

    args.out_dir.mkdir(parents=True, exist_ok=True)
    budget = install_budget(args.budget_min * 60.0)
    mace_args = tools.build_default_arg_parser().parse_args(
        mace_arguments(args.train, args.valid, args.out_dir, args.name, args.r_max, args.seed, args.batch_size, args.max_epochs)
    )
    run(mace_args)
    model_path = args.out_dir / f"{args.name}.model"
    info = {
        "model": str(model_path),
        "r_max": args.r_max,
        "budget_min": args.budget_min,
        **budget.summary(),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        **MACE_ARCH,
    }
    write_json(args.out_dir / "train_info.json", info)
    print(json.dumps(info), file=sys.stdout)


if __name__ == "__main__":
    main()
