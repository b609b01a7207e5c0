"""adascale beside MACE, measured in the same run on the same machine.

Stages (each model trained alone, never two at once):

1. train adascale's short branch (3.5 Å) and long branch (6.0 Å + electrostatics) with
   ``adascale train``, and MACE at r_max 3.5 and 6.0 Å (32x0e+32x1o, 2 interactions) with
   mace-torch's own trainer (``mace_train.py``), each under the same wall-clock budget;
2. predict validation and test forces of each pair with ``adascale predict`` (MACE through
   ``--calculator calculators:mace_calculator:MODEL``), so both families give the same
   PredictionSet;
3. adascale's scale analysis (``analyze``: fixed scales, oracles; ``refine``: pool
   refinement), fitted on validation and reported on test, for each pair; the fixed-anchor
   entries are the per-model test MAEs;
4. inference atoms/s and peak memory of every model on the default box and on 2x, 4x, 8x
   the atoms (one process per model and size);
5. ``results.json`` and ``results.md`` in ``--out-dir``, with ratios adascale/MACE and the
   log-log exponent of cost against atoms.

Needs ``pip install -r benchmarks/requirements.txt``. Example (about an hour of training
at the default budget):

    .venv/bin/python benchmarks/bench_mace.py --data-dir runs/testbed/split --out-dir runs/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import summary
from adascale.files import atomic_write_bytes, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Model:
    """One of the four benchmarked models."""

    name: str
    family: str  # "adascale" or "mace"
    scale: str  # "short" or "long"
    cutoff: float  # Å

    def directory(self, out_dir: Path) -> Path:
        return out_dir / "models" / self.name

    def calculator(self, out_dir: Path) -> str:
        """``module:factory:arg`` that ``adascale predict --calculator`` and speed.py load."""
        if self.family == "mace":
            return f"calculators:mace_calculator:{self.directory(out_dir) / (self.name + '.model')}"
        return f"calculators:adascale_calculator:{self.directory(out_dir)}"


MODELS = (
    Model("adascale_short", "adascale", "short", 3.5),  # adascale's built-in config "local"
    Model("adascale_long", "adascale", "long", 6.0),  # built-in "long_range": 6.0 Å + electrostatics
    Model("mace_r3.5", "mace", "short", 3.5),
    Model("mace_r6.0", "mace", "long", 6.0),
)
ADASCALE_CONFIGS = {"short": "local", "long": "long_range"}
FAMILIES = ("adascale", "mace")
SPLITS = ("valid", "test")


def run_logged(command: list[str], log: Path, *, check: bool = True) -> str | None:
    """Run a command with its output in ``log``. On failure: raise with the log's last lines
    (``check``), or return them (``check=False``); None on success."""
    print("$", shlex.join(command), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if code == 0:
        return None
    tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
    message = f"command failed ({code}): {shlex.join(command)}\n--- {log} ---\n{tail}"
    if check:
        raise SystemExit(message)
    print(message, file=sys.stderr, flush=True)
    return tail.strip().splitlines()[-1] if tail.strip() else f"exit status {code}"


def adascale_command(*verb: str) -> list[str]:
    """The adascale program of this environment (the venv's console script)."""
    return [str(Path(sys.executable).parent / "adascale"), *verb]


def train(model: Model, data_dir: Path, out_dir: Path, budget_min: float, seed: int) -> None:
    """Train one model under the wall-clock budget into ``model.directory(out_dir)``."""
    directory = model.directory(out_dir)
    train_file, valid_file = data_dir / "train.extxyz", data_dir / "valid.extxyz"
    if model.family == "mace":
        command = [
            sys.executable, str(HERE / "mace_train.py"),
            "--train", str(train_file), "--valid", str(valid_file),
            "--r-max", str(model.cutoff), "--budget-min", str(budget_min),
            "--out-dir", str(directory), "--name", model.name, "--seed", str(seed),
        ]  # fmt: skip
    else:
        command = adascale_command(
            "train", "--config", ADASCALE_CONFIGS[model.scale], "--train", str(train_file), "--valid", str(valid_file),
            "--time-budget", str(budget_min), "--set", "training.schedule=cosine_time", "--set", f"training.seed={seed}", "--out", str(directory), "--quiet",
        )  # fmt: skip
    start = time.monotonic()
    run_logged(command, out_dir / "logs" / f"train_{model.name}.log")
    elapsed = time.monotonic() - start
    write_json(directory / "bench_train.json", {"process_s": round(elapsed, 1), "command": shlex.join(command)})


def training_record(model: Model, out_dir: Path) -> dict:
    """How a model's training went: process time, budgeted training time, epochs and steps.

    ``train_s`` is the time each trainer counts against the budget (adascale: its whole
    training loop; MACE: from the first epoch to the end of the last validation).
    """
    directory = model.directory(out_dir)
    record = json.loads((directory / "bench_train.json").read_text())
    if model.family == "mace":
        record.update(json.loads((directory / "train_info.json").read_text()))
    else:
        training = json.loads((directory / "metrics.json").read_text())["training"]
        record.update(
            train_s=round(training["elapsed_s"], 1),
            epochs=training["epochs"],
            steps=training["steps"],
            stopped=training["stopped"],
        )
    return record


def predict(family: str, split: str, data_dir: Path, out_dir: Path, *, reuse: bool = False) -> Path:
    """Predictions of one family's (short, long) pair on one split, as a PredictionSet file
    (``reuse``: take the file an earlier run wrote; it must exist)."""
    out = out_dir / "predictions" / f"{family}_{split}.npz"
    if reuse:
        if not out.is_file():
            raise SystemExit(f"--skip-predict: {out} is missing; run without --skip-predict first")
        return out
    models = [m for m in MODELS if m.family == family]
    command = adascale_command("predict", "--data", str(data_dir / f"{split}.extxyz"), "--out", str(out))
    for model in models:
        command += ["--calculator", model.calculator(out_dir)] if family == "mace" else ["--model", str(model.directory(out_dir))]
    run_logged(command, out_dir / "logs" / f"predict_{family}_{split}.log")
    return out


def scale_analysis(test: Path, valid: Path) -> tuple[dict, dict]:
    """adascale's analyze and refine reports of one pair: fitted on validation, reported on test."""
    from adascale.predictions import PredictionSet
    from adascale.scales.analysis import analyze, refine

    test_set, valid_set = PredictionSet.load(test), PredictionSet.load(valid)
    analysis = analyze(test_set, fit=valid_set, fit_label=str(valid))
    refinement = refine(test_set, fit=valid_set, fit_label=str(valid))
    return analysis, refinement


def speed(model: Model, data_dir: Path, out_dir: Path, multiple: int, repeats: int, threads: int, default_malloc: bool) -> dict:
    """Atoms/s and peak memory of one model on the first test frame tiled ``multiple`` times.

    A failure (e.g. out of memory on the largest system) is recorded as ``error`` in the row,
    so the other measurements still reach the results.
    """
    out = out_dir / "speed" / f"{model.name}_x{multiple}.json"
    command = [
        sys.executable, str(HERE / "speed.py"), "--calculator", model.calculator(out_dir),
        "--data", str(data_dir / "test.extxyz"), "--multiple", str(multiple),
        "--repeats", str(repeats), "--threads", str(threads), "--json", str(out),
        *(["--default-malloc"] if default_malloc else []),
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    error = run_logged(command, out_dir / "logs" / f"speed_{model.name}_x{multiple}.log", check=False)
    if error is not None:
        return {"multiple": multiple, "error": error}
    return json.loads(out.read_text())


def machine() -> dict:
    """The machine and software versions the figures were measured with."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "mace": version("mace-torch"),
        "adascale": version("adascale"),
        "commit": commit,
    }


def collect(args: argparse.Namespace, analyses: dict, speeds: dict[str, list[dict]], command: str) -> dict:
    """Assemble results.json from the stage outputs."""
    analysis = {family: analyses[family][0] for family in FAMILIES}
    per_model = {}
    for model in MODELS:
        anchor = "fixed_s0" if model.scale == "short" else "fixed_s1"
        per_model[model.name] = analysis[model.family]["methods"][anchor]
    by_scale = {family: {m.scale: per_model[m.name] for m in MODELS if m.family == family} for family in FAMILIES}
    speed_by_scale = {family: {m.scale: speeds[m.name] for m in MODELS if m.family == family} for family in FAMILIES}
    results = {
        "command": command,
        "machine": machine(),
        "settings": {
            "budget_min": args.budget_min,
            "data_dir": str(args.data_dir),
            "sizes": args.sizes,
            "seed": args.seed,
            "speed_repeats": args.repeats,
            "speed_threads": args.threads,
            "models": {m.name: {"family": m.family, "scale": m.scale, "cutoff_A": m.cutoff} for m in MODELS},
        },
        "training": {m.name: training_record(m, args.out_dir) for m in MODELS},
        "accuracy": {
            "units": analysis["adascale"]["units"],
            "counts": analysis["adascale"]["counts"],
            "models": per_model,
            "ratio_adascale_over_mace": summary.accuracy_ratios(by_scale["adascale"], by_scale["mace"]),
        },
        "scale_analysis": {
            family: {"methods": analyses[family][0]["methods"], "refinement": analyses[family][1]["refinement"]}
            for family in FAMILIES
        },
        "speed": {
            "models": speeds,
            "exponent": {name: summary.cost_exponent(rows) for name, rows in speeds.items()},
            "ratio_adascale_over_mace": summary.speed_ratios(speed_by_scale["adascale"], speed_by_scale["mace"]),
            "peak_rss_ratio_adascale_over_mace": summary.speed_ratios(
                speed_by_scale["adascale"], speed_by_scale["mace"], key="peak_rss_mb"
            ),
        },
    }
    results["targets"] = summary.targets(results)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=15.0, help="wall-clock training budget per model, minutes")
    parser.add_argument("--data-dir", type=Path, default=Path("runs/testbed/split"), help="folder with train/valid/test.extxyz")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench"), help="models, predictions, logs and results")
    parser.add_argument("--skip-train", action="store_true", help="reuse the models already in OUT_DIR/models")
    parser.add_argument(
        "--skip-predict", action="store_true", help="reuse the predictions already in OUT_DIR/predictions (implies --skip-train)"
    )
    parser.add_argument("--sizes", default="1,2,4,8", help="system sizes for the speed test, as multiples of the frame")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per model and size (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed test")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every model")
    parser.add_argument(
        "--default-malloc", action="store_true", help="speed test with glibc's default allocator settings (see speed.py)"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_mace.py", *(sys.argv[1:] if argv is None else argv)])
    if not (args.skip_train or args.skip_predict):
        for model in MODELS:
            train(model, args.data_dir, args.out_dir, args.budget_min, args.seed)
    analyses = {}
    for family in FAMILIES:
        valid, test = (predict(family, split, args.data_dir, args.out_dir, reuse=args.skip_predict) for split in SPLITS)
        analyses[family] = scale_analysis(test, valid)
    speeds: dict[str, list[dict]] = {m.name: [] for m in MODELS}
    for multiple in args.sizes:  # all models at one size before the next: load drift hits them alike
        for model in MODELS:
            speeds[model.name].append(
                speed(model, args.data_dir, args.out_dir, multiple, args.repeats, args.threads, args.default_malloc)
            )
    results = collect(args, analyses, speeds, command)
    write_json(args.out_dir / "results.json", results)
    markdown = summary.render_markdown(results)
    atomic_write_bytes(args.out_dir / "results.md", lambda f: f.write(markdown.encode()))
    print(markdown)


if __name__ == "__main__":
    main()
