"""Saving and loading branches: a directory with ``weights.pt`` (state_dict) and ``branch.json``.

Weights are loaded with ``torch.load(weights_only=True)``, which never executes pickled
code; both files are written atomically (temp file in the same directory, then
``os.replace``), so a killed save leaves the previous version intact. ``branch.json``
holds the constructor arguments (``kind`` selects the class) plus any caller metadata,
e.g. the training configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes, write_json
from adascale.models.base import Branch
from adascale.models.long_range import LongRangePaiNN
from adascale.models.painn import PaiNN
from adascale.models.scale_conditioned import ScaleConditionedPaiNN

BRANCH_KINDS: dict[str, type[Branch]] = {cls.kind: cls for cls in (PaiNN, LongRangePaiNN, ScaleConditionedPaiNN)}
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "branch.json"


def build_branch(config: dict) -> Branch:
    """A fresh branch from its constructor arguments (``config["kind"]`` picks the class)."""
    kwargs = dict(config)
    kind = kwargs.pop("kind", None)
    if kind not in BRANCH_KINDS:
        raise AdaScaleError(f"unknown branch kind {kind!r}; known kinds: {', '.join(BRANCH_KINDS)}")
    try:
        return BRANCH_KINDS[kind](**kwargs)
    except TypeError as exc:
        raise AdaScaleError(f"invalid settings for a {kind} branch: {exc}") from None


def save_branch(directory: str | os.PathLike, branch: Branch, config: dict | None = None) -> None:
    """Write ``weights.pt`` and ``branch.json`` (``{"branch": ..., **config}``) into ``directory``."""
    directory = Path(directory)
    atomic_write_bytes(directory / WEIGHTS_FILE, lambda f: torch.save(branch.state_dict(), f))
    write_json(directory / CONFIG_FILE, {**(config or {}), "branch": branch.config()})


def read_branch_config(directory: str | os.PathLike) -> dict:
    """The parsed ``branch.json`` of a model directory; missing or corrupt -> AdaScaleError."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise AdaScaleError(f"{directory}: not a model directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaScaleError(f"{path}: corrupt model config ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("branch"), dict):
        raise AdaScaleError(f"{path}: corrupt model config (no 'branch' settings)")
    return config


def load_branch(directory: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Branch:
    """Rebuild a saved branch in eval mode; a missing or corrupt directory raises AdaScaleError."""
    branch = build_branch(read_branch_config(directory)["branch"])
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise AdaScaleError(f"{directory}: no {WEIGHTS_FILE} in the model directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        branch.load_state_dict(state)
    except Exception as exc:  # unpickling errors, truncated files, shape mismatches
        raise AdaScaleError(f"{path}: corrupt or incompatible weights ({type(exc).__name__}: {exc})") from None
    return branch.eval()
