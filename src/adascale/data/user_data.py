"""The user's own labelled frames as train/valid/test sets (``adascale run --data``).

Everything that can make a run fail later, or silently mean nothing, is refused here with one
line before any training: a file too short for the split, an ion species the data never
contains (its report subsets would be empty), and a split that leaves a species out of the
training set (a model cannot predict a species it never saw).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from adascale.data.frames import Frame
from adascale.errors import AdaScaleError, located

SPLIT_NAMES = ("train", "valid", "test")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (it names the data in the report and keys the run's cache)."""
    path = Path(path)
    if not path.is_file():
        raise located("file not found", path=path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ion_numbers(symbols: Sequence[str]) -> tuple[int, ...]:
    """Atomic numbers of chemical symbols such as ``["Na", "Cl"]``; unknown symbols are refused."""
    unknown = [s for s in symbols if s not in atomic_numbers]
    if unknown or not symbols:
        raise AdaScaleError(f"unknown ion species symbol(s) {unknown} (give symbols such as Na,Cl)")
    return tuple(atomic_numbers[s] for s in symbols)


def split_counts(n_frames: int, fractions: Sequence[float], *, path: object) -> list[int]:
    """Train/valid/test frame counts for ``fractions`` of ``n_frames`` (valid and test rounded down, train the rest
    when the fractions add up to 1); a set left with no frame is refused."""
    valid, test = (int(np.floor(f * n_frames + 1e-9)) for f in fractions[1:])
    train = n_frames - valid - test if abs(sum(fractions) - 1) < 1e-9 else int(np.floor(fractions[0] * n_frames + 1e-9))
    counts = [train, valid, test]
    if min(counts) < 1:
        sets = ", ".join(f"{name} {count}" for name, count in zip(SPLIT_NAMES, counts))
        raise located(
            f"{n_frames} frames are too few for the split {','.join(f'{f:g}' for f in fractions)} ({sets} frames); "
            "every set needs at least one frame",
            path=path,
        )
    return counts


def _symbols(numbers) -> str:
    return ", ".join(chemical_symbols[int(z)] for z in sorted(numbers))


def check_ion_species(frames: Sequence[Frame], ions: Sequence[int], *, where: str) -> None:
    """Refuse ion species that no frame contains (``where`` names the data in the message)."""
    present = set().union(*(np.unique(frame.numbers).tolist() for frame in frames))
    absent = [z for z in ions if z not in present]
    if absent:
        raise AdaScaleError(
            f"{where}: ion species {_symbols(absent)} absent from the data (species present: {_symbols(present)}); "
            "set --ion-species to the ions it contains"
        )


def check_split_species(blocks: Mapping[str, Sequence[Frame]], *, where: str) -> None:
    """Refuse a split whose validation or test set holds a species that the training set lacks."""
    trained = set().union(*(np.unique(frame.numbers).tolist() for frame in blocks["train"]))
    for name in SPLIT_NAMES[1:]:
        seen = set().union(*(np.unique(frame.numbers).tolist() for frame in blocks[name]))
        if seen - trained:
            raise AdaScaleError(
                f"{where}: the split leaves species {_symbols(seen - trained)} untrained: they occur in the {name} "
                f"set but in no training frame; reorder the frames or give the sets explicitly"
            )
