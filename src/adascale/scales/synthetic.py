"""Synthetic prediction sets whose best scale per sample is known, for tests, demos and benchmarks.

Each sample i gets a true scale s°_i and its reference force is the prediction at that scale,
ref_i = F_i(s°_i), plus optional noise. With no noise every sample's continuous-oracle loss
is zero, and the pool oracle is zero exactly when the pool holds every s° in use.
"""

from __future__ import annotations

import numpy as np

from adascale.predictions import PredictionSet
from adascale.scales.axis import interpolate

WATER = (8, 1, 1)
IONS = (11, 17)


def synthetic_predictions(
    n_frames: int = 10,
    atoms_per_frame: int = 30,
    n_anchors: int = 2,
    *,
    ions_per_frame: int = 4,
    optimal_scales: list[float] | None = None,
    noise: float = 0.1,
    seed: int = 0,
) -> PredictionSet:
    """A labelled PredictionSet of ``n_frames * atoms_per_frame`` samples on ``n_anchors`` anchors.

    True scales: drawn uniformly from ``optimal_scales`` when given; otherwise they follow the
    regime as on the NaCl testbed: ions closer to another ion need longer range (s° -> 1 as
    d_ion -> 0.2 nm), water mostly short range. Forces in eV/Å (ions larger), d_ion in nm;
    ``noise`` is the label noise relative to each atom's force scale.
    """
    rng = np.random.default_rng(seed)
    n = n_frames * atoms_per_frame
    species_in_frame = [IONS[a % 2] if a < ions_per_frame else WATER[(a - ions_per_frame) % 3] for a in range(atoms_per_frame)]
    species = np.tile(species_in_frame, n_frames)
    is_ion = np.isin(species, IONS)
    d_ion = rng.uniform(0.2, 1.2, n)
    force_scale = np.where(is_ion, 1.0, 0.5)[:, None]  # eV/Å

    pred = np.empty((n_anchors, n, 3))
    pred[0] = rng.normal(size=(n, 3)) * force_scale
    for k in range(1, n_anchors):
        pred[k] = pred[k - 1] + 0.5 * rng.normal(size=(n, 3)) * force_scale
    if optimal_scales is not None:
        s_true = rng.choice(np.asarray(optimal_scales, dtype=float), size=n)
    else:
        reach = np.clip((1.2 - d_ion) / 1.0, 0.0, 1.0)
        s_true = np.clip(np.where(is_ion, reach, 0.4 * reach) + 0.15 * rng.normal(size=n), 0.0, 1.0)
    scales = PredictionSet.default_scales(n_anchors)
    ref = interpolate(pred, scales, s_true) + noise * rng.normal(size=(n, 3)) * force_scale
    return PredictionSet(
        ref=ref,
        pred=pred,
        scales=scales,
        species=species,
        frame=np.repeat(np.arange(n_frames), atoms_per_frame),
        atom=np.tile(np.arange(atoms_per_frame), n_frames),
        d_ion=d_ion,
        branch_names=[f"synthetic_{k}" for k in range(n_anchors)],
        metadata={"source": "synthetic", "seed": seed},
        extras={"s_true": s_true},
    )
