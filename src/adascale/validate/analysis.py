"""Observables of an MD trajectory: RDFs, the self-diffusion coefficient, closest approaches, block errors.

RDFs and mean squared displacements come from freud (C++ on plain numpy arrays and a box, so an
in-memory OpenMM trajectory needs no topology or file format; freud 3.4 is the newest release
for Python 3.11). Intramolecular pairs (O-H and H-H of one rigid water) are left out of every
RDF: they sit at fixed distances in both potentials and say nothing about the model.

Units: positions and boxes in Å, time in ps; g(r) dimensionless; D in 1e-9 m²/s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

R_MAX_A = 6.0
BIN_A = 0.05
#: RDF pairs (atomic numbers); the first three are water's, used for the stability windows.
PAIRS: dict[str, tuple[int, int]] = {
    "O-O": (8, 8),
    "O-H": (8, 1),
    "H-H": (1, 1),
    "Na-O": (11, 8),
    "Cl-O": (17, 8),
    "Na-Cl": (11, 17),
}
WATER_PAIRS = ("O-O", "O-H", "H-H")
A2_PER_PS_IN_1E9_M2_S = 10.0  # 1 Å²/ps = 1e-8 m²/s


def production(times: np.ndarray, equil_ps: float) -> np.ndarray:
    """Mask of the samples at ``times`` (ps) after the first ``equil_ps`` of equilibration."""
    return np.asarray(times) >= equil_ps - 1e-9


def block_mean(values: np.ndarray, blocks: int) -> tuple[float, float]:
    """(mean, standard error) of a correlated series from ``blocks`` consecutive block means."""
    means = np.array([block.mean(axis=0) for block in np.array_split(np.asarray(values, dtype=float), blocks)])
    return float(np.mean(values)), float(means.std(ddof=1) / np.sqrt(blocks))


def _box(lengths: np.ndarray):
    import freud

    return freud.box.Box(*map(float, lengths))


def rdf(positions: np.ndarray, boxes: np.ndarray, numbers: np.ndarray, molecule: np.ndarray, pair: tuple[int, int]):
    """(r (B,), g (B,)) of ``pair`` over frames ``positions`` (T, n, 3) Å in orthorhombic ``boxes`` (T, 3) Å.

    ``molecule`` (n,) labels each atom's molecule; pairs within one molecule are not counted.
    Bins of ``BIN_A`` up to ``R_MAX_A``. Empty species give g = NaN.
    """
    import freud

    first, second = (np.flatnonzero(numbers == z) for z in pair)
    histogram = freud.density.RDF(bins=round(R_MAX_A / BIN_A), r_max=R_MAX_A)
    if not len(first) or not len(second) or (pair[0] == pair[1] and len(first) < 2):
        return histogram.bin_centers, np.full(len(histogram.bin_centers), np.nan)
    same = pair[0] == pair[1]
    for frame, lengths in zip(positions, boxes):
        box = _box(lengths)
        points = box.wrap(frame[second].astype(np.float32))
        query = points if same else box.wrap(frame[first].astype(np.float32))
        found = freud.locality.AABBQuery(box, points).query(query, {"r_max": R_MAX_A, "exclude_ii": same})
        neighbours = found.toNeighborList()
        neighbours.filter(molecule[first][neighbours.query_point_indices] != molecule[second][neighbours.point_indices])
        histogram.compute((box, points), query_points=None if same else query, neighbors=neighbours, reset=False)
    return histogram.bin_centers.copy(), histogram.rdf.copy()


def rdf_error(g_model: np.ndarray, g_reference: np.ndarray) -> float:
    """E = ∫₀^R_MAX |g_model − g_ref| dr (Å), the RDF error of Fu et al.; NaN if either is undefined."""
    return float(np.sum(np.abs(g_model - g_reference)) * BIN_A)


def diffusion(
    positions: np.ndarray, masses: np.ndarray, atoms: np.ndarray, dt_ps: float, groups: int, fit: tuple[float, float] = (0.2, 0.6)
) -> dict:
    """Self-diffusion coefficient of ``atoms`` from unwrapped ``positions`` (T, n, 3) Å sampled every ``dt_ps``.

    The centre-of-mass drift of the whole system (``masses`` (n,)) is removed first; the MSD
    (freud, every time origin) is fitted by MSD = 6 D t over lags from ``fit[0]`` to ``fit[1]``
    of the trajectory length (past the ballistic start, before the few-origin tail). The error
    is the standard error of D over ``groups`` disjoint groups of the atoms. Returns mean, sem
    (1e-9 m²/s), and the MSD curve (lag_ps, msd_A2).
    """
    import freud

    centre = np.einsum("tni,n->ti", positions, masses) / masses.sum()
    relative = positions[:, atoms] - centre[:, None, :]
    msd = freud.msd.MSD(mode="window").compute(relative).particle_msd  # (T, n_selected) Å²
    lags = np.arange(len(positions)) * dt_ps
    window = (lags >= fit[0] * lags[-1]) & (lags <= fit[1] * lags[-1])

    def coefficient(curve: np.ndarray) -> float:
        return float(np.polyfit(lags[window], curve[window], 1)[0] / 6.0 * A2_PER_PS_IN_1E9_M2_S)

    per_group = [coefficient(msd[:, chunk].mean(axis=1)) for chunk in np.array_split(np.arange(len(atoms)), groups)]
    curve = msd.mean(axis=1)
    return {
        "mean": coefficient(curve),
        "sem": float(np.std(per_group, ddof=1) / np.sqrt(groups)),
        "lag_ps": lags.tolist(),
        "msd_A2": curve.tolist(),
    }


def closest_approach(frame: np.ndarray, lengths: np.ndarray, molecule: np.ndarray, numbers: np.ndarray) -> dict[str, float]:
    """Closest distance (Å) between atoms of different molecules in one frame, per species pair
    ("O-H", "O-O", "Na-O", "Cl-Na", ...: symbols by descending atomic number); pairs with none within
    ``R_MAX_A`` are absent.

    Per species pair, not per kind of molecule pair: a hydrogen bond (O...H near 1.5 Å) is far
    closer than two oxygens ever come (2.4 Å), so one limit for all water-water pairs would let
    oxygens overlap unflagged.
    """
    import freud
    from ase.data import chemical_symbols

    box = _box(lengths)
    points = box.wrap(frame.astype(np.float32))
    found = freud.locality.AABBQuery(box, points).query(points, {"r_max": R_MAX_A, "exclude_ii": True}).toNeighborList()
    i, j, distance = found.query_point_indices, found.point_indices, found.distances
    other = molecule[i] != molecule[j]
    high, low = np.maximum(numbers[i], numbers[j])[other], np.minimum(numbers[i], numbers[j])[other]
    distance = distance[other]
    closest = {}
    for a, b in sorted(set(zip(high.tolist(), low.tolist()))):
        closest[f"{chemical_symbols[a]}-{chemical_symbols[b]}"] = float(distance[(high == a) & (low == b)].min())
    return closest


def windows(times: np.ndarray, width: float) -> Sequence[np.ndarray]:
    """Index arrays of consecutive ``width`` ps windows of ``times`` (the last, if partial, dropped)."""
    start = times[0]
    count = int(np.floor((times[-1] - start) / width + 1e-9)) if len(times) > 1 else 0
    return [np.flatnonzero((times >= start + k * width) & (times < start + (k + 1) * width)) for k in range(count)]
