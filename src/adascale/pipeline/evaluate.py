"""``adascale evaluate``: a finished run applied to new labelled frames, reported as the run reports.

Nothing is fitted on the new frames: ``best_global_s`` stays the one fitted on the run's
validation set, the pool is the run's refined pool, the routers, mixture, scale-conditioned
model and deployed model are the run's, and the router features use the run's species.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from adascale.data.frames import read_frames
from adascale.errors import AdaScaleError
from adascale.layout import RunLayout
from adascale.pipeline.config import load_run_config
from adascale.pipeline.report import router_losses
from adascale.pipeline.stages import branch_dirs, load_predictions, predictions_for, run_species
from adascale.scales.methods import MIXTURE


def evaluate_run(
    run_dir: Path,
    data: Path,
    *,
    forces_key: str = "REF_forces",
    energy_key: str = "REF_energy",
    device: str | torch.device = "cpu",
) -> dict:
    """Apply a finished run (branches, refined pool, routers, mixture, the scale-conditioned model and
    the deployed model) to labelled frames in ``data``; the report dictionary. Models run on
    ``device``; routers work on CPU arrays.

    Frames with species the run never saw, or cells too small for a branch, raise AdaScaleError
    naming the file and frame.
    """
    from adascale.scales.analysis import analyze
    from adascale.scales.evaluate import sample_losses
    from adascale.scales.mixture import evaluate_frames
    from adascale.scales.router_report import add_methods

    run = RunLayout(run_dir)
    if not run.stage_marker("report").exists():
        raise AdaScaleError(f"{run_dir}: not a finished `adascale run` directory (no completed report stage)")
    config = load_run_config(run.config)
    frames = read_frames(data, forces_key=forces_key, energy_key=energy_key)
    names = [anchor.name for anchor in config.anchors]
    test = predictions_for(branch_dirs(run, config), frames, data, names, run_species(run), config.ion_species(), device)
    refinement = json.loads(run.refine.read_text())["refinement"]
    report = analyze(
        test,
        fit=load_predictions(run, "valid"),
        fit_label=f"validation set of {run_dir}",
        pool=refinement["final"],
        units=config.units,
        n_resamples=config.bootstrap,
    )
    losses = router_losses(run, test)
    _, mixed = evaluate_frames(_on_device(run.mixture, device), frames)
    losses[MIXTURE] = np.abs(mixed - test.ref).mean(axis=1)
    losses["deployed"] = sample_losses(_on_device(run.deployed, device), frames, path=data)
    if config.adaptive is not None:
        losses[config.adaptive.name] = sample_losses(_on_device(run.branch(config.adaptive.name), device), frames, path=data)
    add_methods(report, test, losses, n_resamples=config.bootstrap)
    report["methods"]["deployed"]["model"] = json.loads(run.deploy.read_text())["model"]
    report["refinement"] = refinement
    report["settings"]["evaluated"] = {"run": str(run_dir), "data": str(data)}
    return report


def _on_device(directory: Path, device: str | torch.device) -> torch.nn.Module:
    """A saved model moved to ``device`` (float64 refused on a GPU)."""
    from adascale.models.io import load_model
    from adascale.runtime import check_precision, resolve_device

    model, device = load_model(directory), resolve_device(device)
    check_precision(device, next(model.parameters()).dtype)
    return model.to(device)
