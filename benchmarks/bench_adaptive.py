"""Adaptive scale inside the model, against every fixed scale, at equal total training wall time T.

Every model below gets the same total training wall time T (one torch thread, one model at a
time, the same data and machine, one run):

    (a) long_range      the long-range branch (6 Å + PME) trained for T
    (b) local           the local branch (3.5 Å) trained for T
    (c) sc_fixed        capacity without adaptivity: the scale-conditioned trunk (0.8 T at random
                        scales), then 0.2 T fine-tuned with every atom at its best single scale
                        (fitted on validation)
        mixture_global  a jointly trained mixture with one global weight: anchors 0.4 T each,
                        then 0.2 T branches + one scale trained together
    (d) mixture_frozen  today's mixture: anchors 0.4 T each (frozen), router 0.2 T
    (e) sc_router       the same trunk (0.8 T), then 0.2 T trained with its label-free router
    (f) mixture_joint   anchors 0.4 T each, then 0.2 T router + branches trained together with
                        the per-atom energy-gauge penalty

(c)/(e) and mixture_global/(f) differ only in adaptivity. Reported per model: test force MAE
(all atoms, ions, close-contact ions; kJ/mol/nm, 95 % frame-bootstrap CI) on the test split and on
generalisation sets generated under conditions training never saw; inference atoms/s (energy +
forces, neighbour list included, 2 threads, float32 and float64, fastest of N calls on one frame);
and for the scale-conditioned model its scale analysis (fixed scales, oracles, refinement, the
distribution of its routed scales). Writes results.json and results.md into --out-dir:

    python benchmarks/bench_adaptive.py --data-dir /work/data/split --general 2M=gen_2M.extxyz \
        --budget-min 6 --out-dir runs/bench_adaptive
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adascale.data.frames import read_frames
from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model, save_model
from adascale.scales.conditioned import analyze_conditioned, grid_predictions
from adascale.scales.evaluate import losses_entry, sample_losses
from adascale.scales.metrics import ReportContext
from adascale.scales.mixture import fit_mixture
from adascale.scales.oracles import anchor_errors, best_global_scale
from adascale.training.config import load_config
from adascale.training.mixture import MixtureSettings
from adascale.training.trainer import Trainer

SUBSETS = ("all", "ions", "close_contact")
FINETUNE = ["training.learning_rate=0.001", "training.warmup_steps=0"]


def train(name: str, config: str, minutes: float, out: Path, train_frames, valid_frames, overrides=()) -> dict:
    """Train one model for ``minutes`` of wall time; returns its training record.

    A model already trained into ``out`` (a previous run of the benchmark) is kept with its
    record: delete its directory to train it again.
    """
    record_file = out / name / "bench_record.json"
    if record_file.is_file():
        return json.loads(record_file.read_text())
    settings = load_config(config, [f"training.time_budget_minutes={minutes}", "training.max_epochs=1000", *overrides])
    start = time.monotonic()
    result = Trainer(settings, train_frames, valid_frames, out / name, show_progress=False).run()
    record = {"steps": result.steps, "wall_s": time.monotonic() - start, "best_valid_mae": result.best_valid_mae}
    record_file.write_text(json.dumps(record))
    print(f"  trained {name}: {record}", flush=True)
    return record


def speed(model, frame, repeats: int) -> dict:
    """Atoms/s of energy + forces (neighbour list included) on 2 threads, float32 and float64."""
    torch.set_num_threads(2)
    out = {}
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(AtomsBatch.from_frame(frame, model.cutoff, dtype=dtype))
            times.append(time.perf_counter() - start)
        out[str(dtype).removeprefix("torch.")] = len(frame) / min(times[1:])
    torch.set_num_threads(1)
    model.to(torch.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="train/valid/test.extxyz")
    parser.add_argument("--general", action="append", default=[], help="NAME=FILE generalisation set (repeatable)")
    parser.add_argument("--budget-min", type=float, default=6.0, help="T: total training wall time of every model, minutes")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="timed inference calls per model and dtype")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, T = args.out_dir, args.budget_min
    out.mkdir(parents=True, exist_ok=True)
    train_frames, valid_frames, test_frames = (read_frames(args.data_dir / f"{s}.extxyz") for s in ("train", "valid", "test"))
    general = {name: read_frames(path) for name, path in (item.split("=", 1) for item in args.general)}
    records: dict[str, dict] = {}

    print("training the fixed-scale branches", flush=True)
    records["long_range"] = train("long_range", "long_range", T, out, train_frames, valid_frames)
    records["local"] = train("local", "local", T, out, train_frames, valid_frames)
    anchors = {name: train(f"{name}_anchor", name, 0.4 * T, out, train_frames, valid_frames) for name in ("local", "long_range")}

    print("training the scale-conditioned model", flush=True)
    trunk = train("sc_trunk", "scale_conditioned", 0.8 * T, out, train_frames, valid_frames)
    valid_grid = grid_predictions(load_model(out / "sc_trunk"), valid_frames)
    best_s = best_global_scale(anchor_errors(valid_grid), valid_grid.scales)[0]
    print(f"  trunk's best single scale on validation: s = {best_s:.3f}", flush=True)
    phase = [f"training.init_from={out / 'sc_trunk'}", f"model.scale.fixed_scale={best_s}", *FINETUNE]
    for name, mode in (("sc_fixed", "fixed"), ("sc_router", "router")):
        record = train(name, "scale_conditioned", 0.2 * T, out, train_frames, valid_frames, [*phase, f"model.scale.mode={mode}"])
        records[name] = {"steps": trunk["steps"] + record["steps"], "wall_s": trunk["wall_s"] + record["wall_s"], "s": best_s}

    print("fitting the mixtures", flush=True)
    base = MixtureSettings(
        train_frames=40, valid_frames=len(valid_frames), finetune_minutes=0.2 * T, finetune_epochs=1000, finetune_frames=20
    )
    variants = {
        "mixture_frozen": base,
        "mixture_joint": base.model_copy(update={"joint": True}),
        "mixture_global": base.model_copy(update={"joint": True, "global_weight": True}),
    }
    for name, settings in variants.items():
        if (out / name / "bench_record.json").is_file():
            records[name] = json.loads((out / name / "bench_record.json").read_text())
            continue
        branches = [load_model(out / f"{a}_anchor") for a in ("local", "long_range")]
        start = time.monotonic()
        mixture, _ = fit_mixture(
            branches,
            [0.0, 1.0],
            train_frames,
            valid_frames,
            test_frames[:2],
            settings=settings,
            context=ReportContext(n_resamples=10),
        )
        save_model(out / name, mixture)
        wall = time.monotonic() - start
        records[name] = {"wall_s": wall + sum(a["wall_s"] for a in anchors.values())}
        (out / name / "bench_record.json").write_text(json.dumps(records[name]))
        print(f"  fitted {name}: {wall:.0f} s", flush=True)

    print("evaluating", flush=True)
    sets = {"test": test_frames} | general
    results: dict = {"budget_min": T, "sets": {k: len(v) for k, v in sets.items()}, "models": {}}
    for name, record in records.items():
        model = load_model(out / name)
        entry = {
            "training": record,
            "mae": {
                s: losses_entry(sample_losses(model, f), f, ReportContext(n_resamples=args.bootstrap)) for s, f in sets.items()
            },
        }
        entry["atoms_per_s"] = speed(model, test_frames[0], args.repeats)
        results["models"][name] = entry
        print(
            f"  {name}: test {entry['mae']['test']['all']:.2f} / {entry['mae']['test']['ions']:.2f}, {entry['atoms_per_s']}",
            flush=True,
        )
    router = load_model(out / "sc_router")
    results["sc_router_analysis"] = analyze_conditioned(
        router, valid_frames, test_frames, context=ReportContext(n_resamples=args.bootstrap)
    )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    """The ablation table, and the scale analysis of the scale-conditioned model."""
    sets = list(results["sets"])
    lines = [
        f"Equal total training wall time T = {results['budget_min']:g} min per model; force MAE kJ/mol/nm "
        "(all / ions / close-contact ions) with 95 % frame-bootstrap CI; inference atoms/s, 2 threads.",
        "",
        "| model | " + " | ".join(sets) + " | atoms/s f32 | atoms/s f64 | training |",
        "| --- |" + " --- |" * (len(sets) + 3),
    ]
    for name, entry in results["models"].items():
        cells = []
        for s in sets:
            m = entry["mae"][s]
            cells.append(
                " / ".join(f"{m[k]:.2f} [{m['ci'][k][0]:.2f}, {m['ci'][k][1]:.2f}]" for k in SUBSETS if m[k] is not None)
            )
        speed = entry["atoms_per_s"]
        train = entry["training"]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {speed['float32']:.0f} | {speed['float64']:.0f} | {train['wall_s']:.0f} s |"
        )
    analysis = results["sc_router_analysis"]
    lines += ["", "Scale analysis of sc_router (grid scales fitted on valid, reported on test; all / ions / close contact):", ""]
    lines += ["| method | all | ions | close_contact |", "| --- | --- | --- | --- |"]
    for name, m in analysis["methods"].items():
        if name.startswith("fixed_s") and name not in ("fixed_s0", "fixed_s1"):
            continue
        cells = " | ".join("-" if m[k] is None else f"{m[k]:.2f}" for k in SUBSETS)
        extra = f" (s = {m['s']:.3f})" if "s" in m else ""
        lines.append(f"| {name}{extra} | {cells} |")
    lines += ["", "Refined pool: " + str(analysis["refinement"]["final"])]
    lines += [
        "Routed scales (mean, 5-95 %): "
        + ", ".join(
            f"{k}: {v['mean']:.2f} ({v['quantiles']['0.05']:.2f}-{v['quantiles']['0.95']:.2f})"
            for k, v in analysis["scale_distribution"].items()
        )
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
