"""The user's own labelled frames as train/valid/test sets (``adascale run --data``).

:class:`DataSettings` says where the frames are and how to read them (the run config's ``data:``
block); :func:`prepare_user_data` reads, checks and splits them into a run directory.
Everything that can make a run fail later, or silently mean nothing, is refused here with one
line before any training: a file too short for the split, frames without forces, an ion species
the data never contains (its report subsets would be empty), a split that leaves a species out
of the training set (a model cannot predict a species it never saw), cells too small for the
largest cutoff and missing energies that a model trains on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adascale.data.frames import Frame, check_cutoff, read_frames, write_frames
from adascale.data.split import split_frames
from adascale.errors import AdaScaleError, located
from adascale.files import write_json
from adascale.layout import SPLITS as SPLIT_NAMES
from adascale.layout import RunLayout


class DataSettings(BaseModel):
    """The user's own labelled frames (``adascale run --data``); they replace the testbed and its split."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(None, description="Frames (any format ASE reads), cut into contiguous blocks by `split`.")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="Train/valid/test fractions of `file`.")
    train: str | None = Field(None, description="Training frames (with `valid` and `test`, instead of `file`).")
    valid: str | None = Field(None, description="Validation frames.")
    test: str | None = Field(None, description="Test frames.")
    ion_species: list[str] = Field(["Na", "Cl"], description="Ion species (symbols): d_i and the report subsets.")
    forces_key: str = Field("REF_forces", description="Reference force array (eV/Å); 'forces' is the fallback.")
    energy_key: str = Field("REF_energy", description="Reference energy (eV); 'energy' is the fallback.")

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        sets = (self.train, self.valid, self.test)
        if (self.file is not None) == any(path is not None for path in sets) or (self.file is None and None in sets):
            raise ValueError("give either `file` (cut by `split`) or all three of `train`, `valid` and `test`")
        if min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ValueError(f"split fractions must be positive and add up to at most 1, got {list(self.split)}")
        try:
            ion_numbers(self.ion_species)
        except AdaScaleError as exc:
            raise ValueError(str(exc)) from None
        return self

    def sources(self) -> dict[str, Path]:
        """The data files by role: ``{"all": file}`` or ``{"train": .., "valid": .., "test": ..}``."""
        if self.file is not None:
            return {"all": Path(self.file)}
        return {name: Path(getattr(self, name)) for name in SPLIT_NAMES}

    def hashes(self) -> dict[str, str]:
        """Each data file's SHA-256 by role: what keys a run's cache, rather than the paths."""
        return {role: file_sha256(path) for role, path in self.sources().items()}


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


def prepare_user_data(settings: DataSettings, layout: RunLayout, *, cutoff: float, energy_needed_by: Sequence[str] = ()) -> None:
    """Read, check and split the user's frames into the run's ``data/{train,valid,test}.extxyz`` and
    ``data/source.json``; refuse, before any training, everything the module docstring lists.

    cutoff: Å, the largest cutoff of the models to train; energy_needed_by: names of the models
    that train on energies (every frame then needs one).
    """
    hashes = settings.hashes()
    keys = {"forces_key": settings.forces_key, "energy_key": settings.energy_key}
    sources = settings.sources()
    files = {role: read_frames(path, **keys) for role, path in sources.items()}
    where = " + ".join(str(path) for path in sources.values())
    check_ion_species([frame for frames in files.values() for frame in frames], ion_numbers(settings.ion_species), where=where)
    for role, frames in files.items():
        for index, frame in enumerate(frames):
            check_cutoff(frame, cutoff, path=sources[role], index=index)
            if energy_needed_by and frame.energy is None:
                raise AdaScaleError(
                    f"{sources[role]}: frame {index}: field {settings.energy_key!r}: no energy, and anchor(s) "
                    f"{', '.join(energy_needed_by)} train on energies (set training.energy_weight=0 in their overrides)"
                )
    if "all" in files:
        counts = split_counts(len(files["all"]), settings.split, path=sources["all"])
        blocks = dict(zip(SPLIT_NAMES, split_frames(files["all"], counts)))
    else:
        blocks = files
    check_split_species(blocks, where=where)
    for name, block in blocks.items():
        write_frames(layout.split(name), block)
    source = {
        "files": [{"role": role, "path": str(path), "sha256": hashes[role]} for role, path in sources.items()],
        "frames": {name: len(block) for name, block in blocks.items()},
        "ion_species": settings.ion_species,
        "forces_key": settings.forces_key,
        "energy_key": settings.energy_key,
    }
    write_json(layout.source, source)
