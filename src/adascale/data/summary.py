"""Dataset statistics for ``adascale data summary``: composition, force scales, ion contacts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import atomic_masses, chemical_symbols

from adascale.data.frames import Frame
from adascale.data.regimes import DEFAULT_CLOSE_CONTACT_NM, DEFAULT_ION_SPECIES, nearest_ion_distance, subset_masks
from adascale.units import KJ_MOL_NM_PER_EV_A

GRAMS_PER_AMU = 1.66053906660e-24
CM3_PER_A3 = 1e-24


def summarize_frames(
    frames: Sequence[Frame],
    ion_species: tuple[int, ...] = DEFAULT_ION_SPECIES,
    close_contact_nm: float = DEFAULT_CLOSE_CONTACT_NM,
) -> dict:
    """Figures that tell whether a dataset is what it should be (forces in kJ/mol/nm).

    Per species: atom count, mean |F component| (the MAE of predicting zero force, the
    baseline any model must beat), RMS component and largest |F|. Contacts: the fraction
    of all atoms within ``close_contact_nm`` of an ion (water near ions) and the fraction of
    ions in close contact with another ion (the ``close_contact`` report subset).
    """
    numbers = np.concatenate([f.numbers for f in frames])
    d_ion = np.concatenate([nearest_ion_distance(f.positions, f.numbers, f.cell, f.pbc, ion_species) for f in frames])
    masks = subset_masks(numbers, d_ion, ion_species, close_contact_nm)
    labelled = all(f.forces is not None for f in frames)
    forces = np.concatenate([f.forces for f in frames]) * KJ_MOL_NM_PER_EV_A if labelled else None
    species = {}
    for z in np.unique(numbers):
        row: dict = {"symbol": chemical_symbols[z], "atoms": int((numbers == z).sum())}
        if forces is not None:
            f = forces[numbers == z]
            row |= {
                "mean_abs_component": float(np.abs(f).mean()),
                "rms_component": float(np.sqrt((f**2).mean())),
                "max_norm": float(np.linalg.norm(f, axis=1).max()),
            }
        species[int(z)] = row
    with np.errstate(invalid="ignore"):
        near_ion = d_ion < close_contact_nm
    n_ions = int(masks["ions"].sum())
    sizes = [len(f) for f in frames]
    periodic = [f for f in frames if f.pbc.all()]
    summary = {
        "frames": len(frames),
        "atoms_per_frame": (min(sizes), max(sizes)),
        "atoms": len(numbers),
        "labelled": labelled,
        "species": species,
        "ions": n_ions,
        "fraction_atoms_near_ion": float(near_ion.mean()),
        "fraction_ions_close_contact": float(masks["close_contact"].sum() / n_ions) if n_ions else float("nan"),
        "close_contact_nm": close_contact_nm,
    }
    if forces is not None:
        summary["mean_abs_component_all"] = float(np.abs(forces).mean())
    energies = [f.energy / len(f) for f in frames if f.energy is not None]
    if energies:
        summary["energy_per_atom_ev"] = (float(np.mean(energies)), float(np.std(energies)))
    if periodic:
        summary["density_g_cm3"] = float(np.mean([_density(f) for f in periodic]))
    return summary


def _density(frame: Frame) -> float:
    mass = atomic_masses[frame.numbers].sum() * GRAMS_PER_AMU
    return mass / (abs(np.linalg.det(frame.cell)) * CM3_PER_A3)
