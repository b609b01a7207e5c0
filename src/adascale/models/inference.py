"""Forces of branches on frames: trained model directories or any ASE calculator.

A branch for prediction is either a model directory (``adascale train`` output) or an ASE
calculator named ``module:factory[:arg]``: ``factory(arg)`` (or ``factory()``) must return an
``ase.calculators.calculator.Calculator``, e.g. a MACE model, so existing MLIPs can serve as
anchors. :func:`predict` runs K branches on the same frames and assembles the
:class:`~adascale.predictions.PredictionSet` (its arrays are documented there).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adascale.data.frames import Frame, check_cutoff
from adascale.data.regimes import DEFAULT_ION_SPECIES, nearest_ion_distance
from adascale.errors import AdaScaleError, located
from adascale.models.base import Branch
from adascale.models.batch import AtomsBatch
from adascale.models.io import load_model
from adascale.predictions import PredictionSet
from adascale.runtime import check_precision, resolve_device

CALCULATOR_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(:.*)?$")
BATCH_ATOMS = 2048  # frames are batched up to about this many atoms


@dataclass
class BranchOutput:
    """One branch's forces (n, 3) eV/Å per frame and, for model branches, latent features (n, F)."""

    name: str
    forces: list[np.ndarray]
    latent: list[np.ndarray] | None = None
    info: dict = field(default_factory=dict)


def is_calculator_spec(text: str) -> bool:
    """True for ``module:factory[:arg]`` strings that are not existing paths."""
    return not Path(text).exists() and bool(CALCULATOR_SPEC.match(text))


def load_calculator(spec: str):
    """Build the ASE calculator named ``module:factory[:arg]``; clear errors for bad specs."""
    if not CALCULATOR_SPEC.match(spec):
        raise AdaScaleError(f"calculator {spec!r}: expected module:factory[:arg], e.g. mypkg.models:make_mace:model.pt")
    module_name, factory_name, *rest = spec.split(":", 2)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdaScaleError(f"calculator {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise AdaScaleError(f"calculator {spec!r}: {module_name} has no callable {factory_name!r}")
    calculator = factory(*rest)
    if not hasattr(calculator, "get_forces") and not hasattr(calculator, "calculate"):
        raise AdaScaleError(f"calculator {spec!r}: the factory returned {type(calculator).__name__}, not an ASE calculator")
    return calculator


def model_forces(
    directory: str | Path,
    frames: Sequence[Frame],
    *,
    path: object = None,
    advance: Callable[[int], None] | None = None,
    device: str | torch.device = "cpu",
) -> BranchOutput:
    """Forces and latent features of a trained model directory on ``frames``, computed on ``device``
    (see :func:`module_forces`)."""
    model, device = load_model(directory, expect=Branch), resolve_device(device)
    check_precision(device, next(model.parameters()).dtype)
    model = model.to(device)
    return module_forces(model, frames, name=str(directory), path=path, advance=advance)


def module_forces(
    model, frames: Sequence[Frame], *, name: str, path: object = None, advance: Callable[[int], None] | None = None
) -> BranchOutput:
    """Forces (n, 3) eV/Å and latent features of a model (any Branch, in eval mode) on ``frames``,
    computed on the model's device (batches move there, results come back as numpy arrays).

    Unknown species and cells too small for the model's cutoff raise AdaScaleError naming
    ``path`` (the data file) and the frame.
    """
    for index, frame in enumerate(frames):
        check_cutoff(frame, model.cutoff, path=path, index=index)
        unknown = sorted(set(np.unique(frame.numbers).tolist()) - set(model.species))
        if unknown:
            raise located(f"species {unknown} unknown to model {name} (trained on {model.species})", path=path, frame=index)
    weights = next(model.parameters())
    forces, latent = [], []
    for group in _groups_by_atoms(frames):
        batch = AtomsBatch.from_frames([frames[k] for k in group], model.cutoff, dtype=weights.dtype, device=weights.device)
        out = model(batch)
        sizes = [len(frames[k]) for k in group]
        forces += [f.double().numpy() for f in torch.split(out["forces"].cpu(), sizes)]
        latent += [f.numpy() for f in torch.split(out["features"].cpu(), sizes)]
        if advance:
            advance(len(group))
    return BranchOutput(name, forces, latent, {"kind": model.kind, "cutoff": model.cutoff})


def scale_grid_forces(
    model, frames: Sequence[Frame], scales: Sequence[float], *, path: object = None, advance: Callable[[int], None] | None = None
) -> list[BranchOutput]:
    """A scale-conditioned model evaluated with every atom at each scale of ``scales`` in turn.

    The outputs are the anchors of a PredictionSet whose ``scales`` are ``scales``: fixed scales,
    pool oracles and refinement then evaluate the model itself at those scales.
    """
    outputs = []
    for scale in scales:
        with model.at_scale(scale):
            outputs.append(module_forces(model, frames, name=f"s={scale:g}", path=path, advance=advance))
    return outputs


def calculator_forces(
    spec: str, frames: Sequence[Frame], *, path: object = None, advance: Callable[[int], None] | None = None
) -> BranchOutput:
    """Forces of the ASE calculator ``spec`` on ``frames`` (eV/Å); failures name the frame."""
    calculator = load_calculator(spec)
    forces = []
    for index, frame in enumerate(frames):
        atoms = frame.to_atoms()
        atoms.calc = calculator
        try:
            values = np.asarray(atoms.get_forces(), dtype=float)
        except Exception as exc:  # any calculator failure becomes a located one-line error
            raise located(f"calculator {spec!r} failed ({type(exc).__name__}: {exc})", path=path, frame=index) from None
        forces.append(values)
        if advance:
            advance(1)
    return BranchOutput(spec, forces, None, {"kind": "ase_calculator"})


def predict(
    frames: Sequence[Frame], outputs: Sequence[BranchOutput], *, path: object = None, metadata: dict | None = None
) -> PredictionSet:
    """The PredictionSet of K branch outputs on labelled ``frames`` (anchors in the given order).

    ``metadata["ion_species"]`` (default Na, Cl) names the species whose nearest member gives ``d_ion``.
    """
    if len(outputs) < 2:
        raise AdaScaleError(f"need at least 2 branches (anchors) for a prediction set, got {len(outputs)}")
    for index, frame in enumerate(frames):
        if frame.forces is None:
            raise located("no reference forces: predict needs labelled frames", path=path, frame=index, field="forces")
        for output in outputs:
            shape = np.shape(output.forces[index])
            if shape != (len(frame), 3) or not np.isfinite(output.forces[index]).all():
                raise located(
                    f"branch {output.name} gave forces of shape {shape} (expected ({len(frame)}, 3), finite)",
                    path=path,
                    frame=index,
                )
    sizes = [len(f) for f in frames]
    ions = tuple(int(z) for z in (metadata or {}).get("ion_species", DEFAULT_ION_SPECIES))
    extras = {
        f"latent_{k}": np.concatenate(output.latent).astype(np.float32)
        for k, output in enumerate(outputs)
        if output.latent is not None
    }
    return PredictionSet(
        ref=np.concatenate([f.forces for f in frames]),
        pred=np.stack([np.concatenate(output.forces) for output in outputs]),
        scales=PredictionSet.default_scales(len(outputs)),
        species=np.concatenate([f.numbers for f in frames]).astype(np.int64),
        frame=np.repeat(np.arange(len(frames)), sizes),
        atom=np.concatenate([np.arange(n) for n in sizes]),
        d_ion=np.concatenate([nearest_ion_distance(f.positions, f.numbers, f.cell, f.pbc, ions) for f in frames]),
        branch_names=[output.name for output in outputs],
        metadata={**(metadata or {}), "branches": [output.info for output in outputs]},
        extras=extras,
    )


def _groups_by_atoms(frames: Sequence[Frame]) -> list[list[int]]:
    """Consecutive frame indices grouped so each group holds about BATCH_ATOMS atoms (at least one frame)."""
    groups, current, atoms = [], [], 0
    for k, frame in enumerate(frames):
        if current and atoms + len(frame) > BATCH_ATOMS:
            groups.append(current)
            current, atoms = [], 0
        current.append(k)
        atoms += len(frame)
    return groups + [current] if current else groups
