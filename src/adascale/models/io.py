"""One versioned format for every saved model: branches, mixtures, routers.

A model directory holds two files:

* ``model.json``: ``{"format": "adascale-model", "version": 2, "kind": ..., "config": ...,
  "metadata": {...}}``. ``kind`` picks the class in :data:`MODEL_KINDS`; ``config`` is its
  constructor settings (``model.config()`` without the kind; a mixture nests its branches'
  configs, each with its own ``kind``); ``metadata`` is free-form (training config, fitted
  statistics, where the branches came from).
* ``weights.pt``: the state_dict, loaded with ``torch.load(weights_only=True)``, which never
  executes pickled code.

Both are written atomically, weights first, so a killed save leaves a loadable directory
(the previous version, or the new one). Directories of the first format (``branch.json``,
``mixture.json`` or ``router.json``, no version), of an unknown kind or version, and run
directories are refused with one line saying what they are and what to do.

A new kind is one entry in :data:`MODEL_KINDS`: a module class with a ``kind`` string, a
``config()`` returning ``{"kind": ..., **settings}`` and a ``from_config(settings, build)``
classmethod (:class:`~adascale.models.base.Branch` gives ``cls(**settings)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes, write_json
from adascale.layout import RunLayout
from adascale.models.long_range import LongRangePaiNN
from adascale.models.mixture import AdaptiveMixture
from adascale.models.painn import PaiNN
from adascale.models.router import RouterModel
from adascale.models.scale_conditioned import ScaleConditionedPaiNN

FORMAT, VERSION = "adascale-model", 2
MODEL_FILE, WEIGHTS_FILE = "model.json", "weights.pt"
#: Every saved model kind: ``kind`` string -> class.
MODEL_KINDS: dict[str, type[nn.Module]] = {
    cls.kind: cls for cls in (PaiNN, LongRangePaiNN, ScaleConditionedPaiNN, AdaptiveMixture, RouterModel)
}
#: Files of the first (unversioned) format and the command that writes the current one.
OLD_FORMATS = {"branch.json": "adascale train", "mixture.json": "adascale mixture", "router.json": "adascale route"}


def build_model(config: Mapping) -> nn.Module:
    """A fresh model from ``{"kind": ..., **settings}`` (nested configs are built the same way)."""
    settings = dict(config)
    kind = settings.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise AdaScaleError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_KINDS)}")
    try:
        return MODEL_KINDS[kind].from_config(settings, build_model)
    except TypeError as exc:
        raise AdaScaleError(f"invalid settings for a {kind} model: {exc}") from None


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of a model, rebuilt from its config and state_dict (the saved format, in memory).

    ``copy.deepcopy`` fails on a model that has run: torch-pme's mesh interpolator keeps the last
    call's interpolation weights, a non-leaf tensor that torch refuses to deep-copy."""
    clone = build_model(model.config())
    parameter = next(model.parameters(), None)
    if parameter is not None:
        clone = clone.to(dtype=parameter.dtype)
    clone.load_state_dict(model.state_dict())
    return clone.train(model.training)


def save_model(directory: str | os.PathLike, model: nn.Module, metadata: dict | None = None) -> None:
    """Write ``weights.pt`` then ``model.json`` into ``directory`` (created if needed), each atomically.

    The weights are stored on the CPU whatever device the model trains on, so the file loads anywhere."""
    directory = Path(directory)
    settings = dict(model.config())
    kind = settings.pop("kind")
    if MODEL_KINDS.get(kind) is not type(model):
        raise AdaScaleError(f"cannot save a {type(model).__name__}: kind {kind!r} is not in the model registry")
    atomic_write_bytes(
        directory / WEIGHTS_FILE, lambda f: torch.save({key: value.cpu() for key, value in model.state_dict().items()}, f)
    )
    info = {"format": FORMAT, "version": VERSION, "kind": kind, "config": settings, "metadata": metadata or {}}
    write_json(directory / MODEL_FILE, info)


def read_model_info(directory: str | os.PathLike) -> dict:
    """The checked ``model.json`` of a model directory; anything else raises one AdaScaleError line."""
    directory = Path(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise AdaScaleError(_not_a_model_directory(directory))
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaScaleError(f"{path}: corrupt model file ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise AdaScaleError(f'{path}: not an adascale model file (no "format": "{FORMAT}")')
    if info.get("version") != VERSION:
        raise AdaScaleError(
            f"{path}: model format version {info.get('version')!r}, but this adascale reads version {VERSION}; "
            "retrain the model with this version (or use the adascale that wrote it)"
        )
    if info.get("kind") not in MODEL_KINDS:
        raise AdaScaleError(
            f"{path}: unknown model kind {info.get('kind')!r} (this adascale knows {', '.join(MODEL_KINDS)}); "
            "retrain it with this version"
        )
    if not isinstance(info.get("config"), dict) or not isinstance(info.get("metadata", {}), dict):
        raise AdaScaleError(f"{path}: corrupt model file ('config' and 'metadata' must be objects)")
    return info


def load_model(
    directory: str | os.PathLike, *, expect: type | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild any saved model in eval mode, in the precision it was saved in.

    ``expect``: a class the model must be an instance of (e.g. Branch), else AdaScaleError.
    """
    directory = Path(directory)
    info = read_model_info(directory)
    model = build_model({"kind": info["kind"], **info["config"]})
    if expect is not None and not isinstance(model, expect):
        raise AdaScaleError(f"{directory}: holds a {info['kind']} model, expected a {expect.__name__}")
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise AdaScaleError(f"{directory}: no {WEIGHTS_FILE} in the model directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        floats = [value.dtype for value in state.values() if value.is_floating_point()]
        fresh = next(model.parameters(), None)
        if floats and fresh is not None and floats[0] != fresh.dtype:
            model.to(floats[0])  # only then: a blanket cast would round torch-pme's float64 constants to float32
        model.load_state_dict(state)
    except Exception as exc:  # unpickling errors, truncated files, shape mismatches
        raise AdaScaleError(f"{path}: corrupt or incompatible weights ({type(exc).__name__}: {exc})") from None
    return model.eval()


def initialise_from(model: nn.Module, source: str | os.PathLike | Sequence | Mapping) -> None:
    """Copy saved weights into ``model`` (a warm start): ``source`` is a model directory (the whole
    model), a list of directories (one per ``model.branches[k]``, e.g. a mixture's anchors), or a map
    from submodule name (``""`` for the whole model) to directory. Shapes must match exactly."""
    if isinstance(source, (str, os.PathLike)):
        targets = {"": source}
    elif isinstance(source, Mapping):
        targets = dict(source)
    else:
        branches = getattr(model, "branches", None)
        if branches is None or len(branches) != len(source):
            have = "no branches" if branches is None else f"{len(branches)} branches"
            raise AdaScaleError(f"init_from: {len(source)} directories given, but the model has {have}")
        targets = {f"branches.{k}": directory for k, directory in enumerate(source)}
    for name, directory in targets.items():
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise AdaScaleError(f"init_from: the model has no submodule {name!r}") from None
        state = load_model(directory).state_dict()
        reference = next((p for p in target.parameters()), None)
        if reference is not None:
            state = {key: value.to(reference.dtype) if value.is_floating_point() else value for key, value in state.items()}
        try:
            target.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise AdaScaleError(f"init_from {directory}: its weights do not fit {name or 'the model'} ({first})") from None


def _not_a_model_directory(directory: Path) -> str:
    if RunLayout(directory).looks_like_run():
        return (
            f"{directory}: this is a run directory (adascale run), not a model directory; "
            "use AdaScaleCalculator.from_run(DIR) or the run's deployed model"
        )
    for name, command in OLD_FORMATS.items():
        if (directory / name).is_file():
            return (
                f"{directory}: a model in the old unversioned format ({name}); "
                f"this adascale reads format version {VERSION}: retrain it ({command})"
            )
    return f"{directory}: not a model directory (no {MODEL_FILE})"
