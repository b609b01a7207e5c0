"""Resumable training checkpoints: one ``checkpoint.pt`` per run, written atomically, loaded safely.

The file holds only tensors and plain Python values (model and optimizer state dicts,
counters, the resolved config), so ``torch.load(weights_only=True)`` reads it without
executing pickled code. A kill during a write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from adascale.errors import AdaScaleError
from adascale.files import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` atomically."""
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; missing or corrupt files raise AdaScaleError."""
    path = Path(path)
    if not path.is_file():
        raise AdaScaleError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdaScaleError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "progress", "config"} <= state.keys():
        raise AdaScaleError(f"{path}: corrupt checkpoint (missing model, optimizer, progress or config)")
    return state
