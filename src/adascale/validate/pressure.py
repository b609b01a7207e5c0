"""The pressure a barostat feels, from a model beside the reference's labels, on labelled frames.

A Monte Carlo barostat scales molecule centres and keeps molecules rigid, so what decides the
NPT density is the molecular stress, not the atomic one that ``REF_stress`` holds (for rigid
water they differ by ~25,000 bar). The two are related through positions and forces only:
σ_mol = σ_atomic + (1/V) Σ_i (r_i − c_i) ⊗ F_i, with c_i the geometric centre of atom i's
molecule (whole waters; an ion is its own centre). So both the model's and the reference's
configurational molecular pressure follow from a frame's stress and forces, with no MD: a model
whose pressure lies far above the reference's expands under a barostat, whatever its force MAE.

Units: stress eV/Å³, pressure bar (P = −tr σ / 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adascale.errors import AdaScaleError
from adascale.units import BAR_PER_EV_A3


def molecular_pressure(stress: np.ndarray, forces: np.ndarray, offsets: np.ndarray, volume: float) -> float:
    """Configurational pressure (bar) with molecules rigid: atomic ``stress`` (3, 3) eV/Å³, ``forces``
    (n, 3) eV/Å, ``offsets`` (n, 3) Å of each atom from its molecule's centre, ``volume`` Å³."""
    molecular = stress + np.einsum("ni,nj->ij", offsets, forces) / volume
    return float(-np.trace(molecular) / 3 * BAR_PER_EV_A3)


def centre_offsets(frame) -> tuple[np.ndarray, np.ndarray]:
    """(whole positions (n, 3) Å, offsets (n, 3) Å of each atom from its molecule's geometric centre);
    waters found by connectivity, every other atom a molecule of its own."""
    from adascale.deploy.rigid_water import find_waters, whole_waters

    atoms = frame.to_atoms()
    waters = find_waters(atoms)
    whole = whole_waters(atoms, waters)
    offsets = np.zeros_like(whole)
    offsets[waters.ravel()] = (whole[waters] - whole[waters].mean(axis=1, keepdims=True)).reshape(-1, 3)
    return whole, offsets


def pressure_check(potential, frames: Sequence, *, where: str = "frames") -> dict:
    """The model's (a :class:`~adascale.deploy.potential.Potential`) and the labels' molecular pressure on
    ``frames`` (each with stress and forces, periodic in 3D): per-frame values and the mean difference
    model − reference with its standard error over frames (bar)."""
    if not frames:
        raise AdaScaleError(f"{where}: no frames for the pressure check")
    model, reference = [], []
    for index, frame in enumerate(frames):
        if frame.stress is None or not np.asarray(frame.pbc).all():
            raise AdaScaleError(
                f"{where}: frame {index}: no reference stress in a 3D-periodic cell (the pressure check needs both)"
            )
        whole, offsets = centre_offsets(frame)
        volume = abs(float(np.linalg.det(frame.cell)))
        evaluation = potential.compute(frame.numbers, whole, frame.cell, frame.pbc, stress=True)
        model.append(molecular_pressure(evaluation.stress, evaluation.forces, offsets, volume))
        reference.append(molecular_pressure(frame.stress, frame.forces, offsets, volume))
    difference = np.subtract(model, reference)
    sem = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else None
    return {
        "unit": "bar",
        "frames": len(frames),
        "model": model,
        "reference": reference,
        "difference": {
            "mean": float(difference.mean()),
            "sem": sem,
            "min": float(difference.min()),
            "max": float(difference.max()),
        },
    }
