"""Loss-guided refinement of a scale pool (docs/concepts.md, "Loss-guided pool refinement"), fitted on one prediction set.

The objective is the pool-oracle loss L(P) = mean_i min_{p in P} l_i(p) (per frame when the
:class:`ScaleLosses` routes frames). Both moves below never raise it:

- insertion: propose the midpoints of adjacent pool scales and insert the one that lowers
  L(P) most; a superset pool can only lower a minimum;
- ``gradient`` update: treat the interior (non-anchor) scales as free parameters of a
  one-dimensional k-medians under the force loss. Rather than a step along the
  subgradient (each sample pulling the scale it is assigned to), take the exact minimum
  that such steps converge to: assign every unit to its best scale, then move each
  interior scale to the exact minimiser of its members' summed loss (a weighted median,
  :func:`best_global_scale`), Lloyd style. Neither half-step can raise L(P), so no step
  size or line search is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adascale.errors import AdaScaleError
from adascale.scales.axis import as_pool
from adascale.scales.oracles import ScaleLosses, best_global_scale

UPDATES: tuple[str, ...] = ("insert", "gradient")


@dataclass
class RefineStep:
    """One point of the refinement history."""

    pool: np.ndarray  # (P,) sorted scales
    loss: float  # L(P) on the fit set, eV/Å
    kind: str  # "init", "insert" (a midpoint was added) or "move" (interior scales moved)


def refine_pool(
    losses: ScaleLosses,
    init: np.ndarray,
    *,
    max_size: int = 9,
    tol: float = 1e-3,
    update: str = "insert",
    max_moves: int = 50,
) -> list[RefineStep]:
    """Grow ``init`` by loss-guided insertion until the pool has ``max_size`` scales or the
    best insertion lowers L(P) by less than ``tol`` (relative); with ``update="gradient"``
    the interior scales are also re-optimised after every insertion. Returns every step."""
    if update not in UPDATES:
        raise AdaScaleError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    if max_size < 1 or tol < 0:
        raise AdaScaleError(f"need max_size >= 1 and tol >= 0, got {max_size} and {tol}")
    pool = as_pool(init, name="init")
    history = [RefineStep(pool, losses.pool_loss(pool), "init")]
    if update == "gradient":
        history += move_interior(losses, history[-1], tol=tol, max_moves=max_moves)
    while len(history[-1].pool) < max_size:
        current = history[-1]
        step = best_insertion(losses, current)
        if step is None:
            break
        gain = _relative_gain(current.loss, step.loss)
        if gain <= 0 or gain < tol:
            break
        history.append(step)
        if update == "gradient":
            history += move_interior(losses, step, tol=tol, max_moves=max_moves)
    return history


def best_insertion(losses: ScaleLosses, current: RefineStep) -> RefineStep | None:
    """The pool with the best midpoint of adjacent scales inserted, or None without candidates."""
    pool = current.pool
    candidates = 0.5 * (pool[:-1] + pool[1:])
    if candidates.size == 0:
        return None
    best_now = losses.best_unit_loss(pool)
    totals = [float(np.minimum(best_now, losses.unit_loss(c)).sum()) / losses.n_samples for c in candidates]
    pick = int(np.argmin(totals))
    return RefineStep(np.sort(np.append(pool, candidates[pick])), totals[pick], "insert")


def move_interior(losses: ScaleLosses, current: RefineStep, *, tol: float, max_moves: int) -> list[RefineStep]:
    """Lloyd iterations on the interior scales (anchors stay); one step per accepted move.

    Stops when a move no longer lowers L(P), lowers it by less than ``tol`` (relative), or
    after ``max_moves``. Scales that land on the same value merge.
    """
    steps: list[RefineStep] = []
    pool, loss = current.pool, current.loss
    for _ in range(max_moves):
        interior = np.flatnonzero(~np.isin(pool, losses.scales))
        if interior.size == 0:
            break
        assigned = losses.best_scale(pool)
        moved = pool.copy()
        for m in interior:
            members = assigned == pool[m]
            if members.any():
                moved[m], _ = best_global_scale(np.compress(members, losses.errors, axis=1), losses.scales)
        moved = as_pool(moved)
        new_loss = losses.pool_loss(moved)
        if not new_loss < loss:
            break
        steps.append(RefineStep(moved, new_loss, "move"))
        gain = _relative_gain(loss, new_loss)
        losses.forget_except(moved)
        pool, loss = moved, new_loss
        if gain < tol:
            break
    return steps


def _relative_gain(before: float, after: float) -> float:
    return (before - after) / before if before > 0 else 0.0
