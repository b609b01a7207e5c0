"""PredictionSet: every branch's forces on every sample of an evaluation set, with labels.

Everything after ``adascale predict`` (analyze, refine, route, report) works on this one
array bundle, so it is validated once, on construction and on load.

File format (``.npz``, written atomically, loadable with ``allow_pickle=False``):

=================  ===========  =====================================================
key                shape        meaning
=================  ===========  =====================================================
``ref``            (N, 3)       reference forces, eV/Å (finite)
``pred``           (K, N, 3)    each anchor branch's forces, eV/Å, shortest range first
``scales``         (K,)         anchor positions on the scale axis: strictly increasing,
                                first 0, last 1 (default: evenly spaced)
``species``        (N,)         atomic numbers
``frame``          (N,)         frame index of each sample
``atom``           (N,)         index of the atom within its frame
``d_ion``          (N,)         nearest-ion distance, nm; NaN where the frame has no other ion
``branch_names``   () or (K,)   K strings: a JSON list, or a plain string array
``metadata``       ()           optional JSON object; ``ion_species`` (atomic numbers or
                                symbols, default Na, Cl) and ``close_contact_nm`` (default
                                0.6) define the report subsets; the reports say which
                                defaults were used
``extra__<name>``  (N, ...) or  any other per-sample array (e.g. inference-time router
                   (K, N, ...)  features), kept as is on save and load
=================  ===========  =====================================================

N samples (atoms of all frames), K >= 2 anchors. Sets written by other tools need only the
arrays; everything they hold is checked as strictly as a set written here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from adascale.data.regimes import DEFAULT_CLOSE_CONTACT_NM, DEFAULT_ION_SPECIES, subset_masks
from adascale.errors import AdaScaleError, located
from adascale.files import atomic_output

ARRAY_FIELDS: tuple[str, ...] = ("ref", "pred", "scales", "species", "frame", "atom", "d_ion")
EXTRA_PREFIX = "extra__"
#: Metadata keys that define the report subsets, with the defaults used where a set omits them.
SUBSET_DEFAULTS: dict[str, object] = {"ion_species": list(DEFAULT_ION_SPECIES), "close_contact_nm": DEFAULT_CLOSE_CONTACT_NM}


@dataclass
class PredictionSet:
    """Labelled branch predictions on N samples from K anchors (see the module docstring)."""

    ref: np.ndarray
    pred: np.ndarray
    scales: np.ndarray
    species: np.ndarray
    frame: np.ndarray
    atom: np.ndarray
    d_ion: np.ndarray
    branch_names: list[str]
    metadata: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: The subset keys (of SUBSET_DEFAULTS) that the given metadata left out, so defaults apply.
    defaulted: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.ref = np.asarray(self.ref, dtype=float)
        self.pred = np.asarray(self.pred, dtype=float)
        self.scales = np.asarray(self.scales, dtype=float)
        self.species = np.asarray(self.species)
        self.frame = np.asarray(self.frame)
        self.atom = np.asarray(self.atom)
        self.d_ion = np.asarray(self.d_ion, dtype=float)
        self.branch_names = [str(name) for name in self.branch_names]
        metadata = dict(self.metadata)
        self.defaulted = tuple(key for key in SUBSET_DEFAULTS if key not in metadata)
        self.metadata = {**SUBSET_DEFAULTS, **metadata}
        self.metadata["ion_species"] = _atomic_numbers(self.metadata["ion_species"])
        self.metadata["close_contact_nm"] = _positive_nm(self.metadata["close_contact_nm"])
        self.extras = {name: np.asarray(value) for name, value in self.extras.items()}
        self._validate()

    @property
    def K(self) -> int:
        """Number of anchors."""
        return int(self.pred.shape[0])

    @property
    def N(self) -> int:
        """Number of samples."""
        return int(self.ref.shape[0])

    @staticmethod
    def default_scales(K: int) -> np.ndarray:
        """K anchor positions evenly spaced on [0, 1] (K >= 2)."""
        if K < 2:
            raise AdaScaleError(f"need at least 2 anchors, got {K}")
        return np.linspace(0.0, 1.0, K)

    def masks(self) -> dict[str, np.ndarray]:
        """Boolean (N,) masks for the report subsets ``all``, ``ions``, ``close_contact``."""
        return subset_masks(
            self.species,
            self.d_ion,
            ion_species=tuple(self.metadata["ion_species"]),
            close_contact_nm=self.metadata["close_contact_nm"],
        )

    def subset_definition(self) -> dict:
        """How the subsets were defined, for reports: ion species (numbers and symbols), the
        close-contact distance, and which of them are defaults the set did not state."""
        ions = self.metadata["ion_species"]
        return {
            "ion_species": ions,
            "ion_symbols": [chemical_symbols[z] for z in ions],
            "close_contact_nm": self.metadata["close_contact_nm"],
            "defaults": list(self.defaulted),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in ARRAY_FIELDS}
        arrays["branch_names"] = np.array(json.dumps(self.branch_names))
        arrays["metadata"] = np.array(json.dumps(self.metadata))
        arrays.update({EXTRA_PREFIX + name: value for name, value in self.extras.items()})
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PredictionSet:
        """Read and validate a ``.npz``; any problem raises an AdaScaleError naming file and field."""
        path = Path(path)
        if not path.is_file():
            raise located("no such prediction set file", path=path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:  # zip/pickle/format errors all mean "not a readable .npz"
            raise located(f"not a readable .npz file ({exc})", path=path) from None
        for name in (*ARRAY_FIELDS, "branch_names"):
            if name not in arrays:
                raise located("missing from the file", path=path, field=name)
        branch_names = _branch_names(arrays["branch_names"], path)
        metadata = _json(arrays["metadata"], path, "metadata") if "metadata" in arrays else {}
        if not isinstance(metadata, dict):
            raise located("must be a JSON object", path=path, field="metadata")
        extras = {key[len(EXTRA_PREFIX) :]: value for key, value in arrays.items() if key.startswith(EXTRA_PREFIX)}
        try:
            return cls(
                **{name: arrays[name] for name in ARRAY_FIELDS},
                branch_names=branch_names,
                metadata=metadata,
                extras=extras,
            )
        except AdaScaleError as exc:
            raise located(str(exc), path=path) from None

    def _validate(self) -> None:
        """Check shapes, K consistency, finiteness and the anchor scales; raise naming the field."""
        if self.ref.ndim != 2 or self.ref.shape[1] != 3:
            raise located(f"expected shape (N, 3), got {self.ref.shape}", field="ref")
        n = self.ref.shape[0]
        if n == 0:
            raise located("the prediction set has no samples", field="ref")
        if self.pred.ndim != 3 or self.pred.shape[1:] != (n, 3):
            raise located(f"expected shape (K, {n}, 3) to match ref, got {self.pred.shape}", field="pred")
        k = self.pred.shape[0]
        if k < 2:
            raise located(f"need K >= 2 anchor branches, got {k}", field="pred")
        if self.scales.shape != (k,):
            raise located(f"expected {k} anchor scales (one per branch in pred), got shape {self.scales.shape}", field="scales")
        if len(self.branch_names) != k:
            raise located(f"expected {k} names (one per branch in pred), got {len(self.branch_names)}", field="branch_names")
        for name in ("species", "frame", "atom", "d_ion"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise located(f"expected shape ({n},) to match ref, got {value.shape}", field=name)
        for name in ("species", "frame", "atom"):
            if not np.issubdtype(getattr(self, name).dtype, np.integer):
                raise located(f"must hold integers, got dtype {getattr(self, name).dtype}", field=name)
        for name in ("ref", "pred", "scales"):
            _require_finite(getattr(self, name), name)
        if np.isinf(self.d_ion).any() or (self.d_ion < 0).any():
            raise located("must be >= 0 nm, or NaN where the frame has no other ion", field="d_ion")
        s = self.scales
        if s[0] != 0.0 or s[-1] != 1.0 or not (np.diff(s) > 0).all():
            raise located(f"anchor scales must increase strictly from 0 to 1, got {s.tolist()}", field="scales")
        for name, value in self.extras.items():
            if not (value.shape[:1] == (n,) or value.shape[:2] == (k, n)):
                raise located(f"expected first axis {n} or first axes ({k}, {n}), got {value.shape}", field=EXTRA_PREFIX + name)


def _json(value: np.ndarray, path: Path, name: str) -> object:
    """Decode a 0-d string array holding JSON; raise naming the field otherwise."""
    if value.ndim != 0 or value.dtype.kind != "U":
        raise located(
            f"expected a JSON string, got an array of dtype {value.dtype} and shape {value.shape}", path=path, field=name
        )
    try:
        return json.loads(str(value))
    except ValueError:
        raise located("is not valid JSON", path=path, field=name) from None


def _branch_names(value: np.ndarray, path: Path) -> list[str]:
    """Branch names stored as a JSON list (as PredictionSet.save writes them) or as a (K,) string array."""
    if value.ndim == 1 and value.dtype.kind == "U":
        return value.tolist()
    names = _json(value, path, "branch_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise located("must be a JSON list of strings", path=path, field="branch_names")
    return names


def _atomic_numbers(species: object) -> list[int]:
    """Ion species given as atomic numbers or element symbols (mixed is fine), as atomic numbers."""
    if isinstance(species, (str, int)):
        species = [species]
    if not isinstance(species, (list, tuple)) or not species:
        raise located(f"ion_species must be a non-empty list of atomic numbers or symbols, got {species!r}", field="metadata")
    numbers = []
    for item in species:
        if isinstance(item, str) and item in atomic_numbers:
            numbers.append(atomic_numbers[item])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 < item < len(chemical_symbols):
            numbers.append(int(item))
        else:
            raise located(f"ion_species: {item!r} is neither an element symbol nor an atomic number", field="metadata")
    return numbers


def _positive_nm(value: object) -> float:
    """The close-contact distance, a positive number of nm."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise located(f"close_contact_nm must be a positive number (nm), got {value!r}", field="metadata")
    return float(value)


def _require_finite(values: np.ndarray, name: str) -> None:
    """Raise naming the field and the first non-finite sample."""
    bad = ~np.isfinite(values)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise located(f"non-finite value at index {where}", field=name)


def frame_groups(frame: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense group ids 0..G-1 for a (N,) frame index, and G.

    Frame-level work (bootstrap resampling, per-frame routing) sums per group with
    ``np.bincount``; the common case of samples already ordered by frame costs one pass.
    """
    frame = np.asarray(frame)
    if frame.size and (np.diff(frame) >= 0).all():
        groups = np.concatenate([[0], np.cumsum(np.diff(frame) != 0)])
        return groups, int(groups[-1]) + 1
    _, groups = np.unique(frame, return_inverse=True)
    return groups.ravel(), int(groups.max(initial=-1)) + 1
