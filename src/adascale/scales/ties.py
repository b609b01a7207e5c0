"""Deployment that knows its noise: among the candidates whose validation MAE cannot be told
apart from the best's, deploy the fastest.

A candidate ties with the best when its validation MAE lies within the best's interval (at
most its upper end). That interval should be seed-aware (:func:`adascale.scales.metrics.seed_frame_bootstrap`):
retraining with another seed moves a model's MAE by several times its frame-bootstrap interval,
so a lead smaller than that says nothing. Speed is the wall time of one force call on one
frame (:func:`seconds_per_call`), the quantity MD repeats every step; timings within
``speed_tolerance`` of the fastest count as equally fast (timing noise), and among those the
lower validation MAE wins.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from adascale.errors import AdaScaleError

DEFAULT_SPEED_TOLERANCE = 0.05
#: Timed calls of :func:`seconds_per_call` and the untimed ones before them.
DEFAULT_REPEATS, DEFAULT_WARMUP = 5, 1
RULE = (
    "candidates whose validation MAE is at most the upper end of the best's (seed-aware) interval tie; "
    "of those, the fastest force call on one frame is deployed (within {tol:.0%} of the fastest counts as "
    "equally fast, then the lower MAE wins)"
)


def tied_candidates(scores: dict[str, dict]) -> list[str]:
    """The names whose ``mae`` lies within the best's interval, best first (by MAE, then name).

    scores: {name: {"mae": float | None, "ci": [lo, hi] | None}}; candidates without an MAE
    take no part; a best without an interval ties only with equal MAEs.
    """
    valid = {name: entry for name, entry in scores.items() if entry.get("mae") is not None}
    if not valid:
        raise AdaScaleError("no candidate has a validation MAE to choose on")
    ranked = sorted(valid, key=lambda name: (valid[name]["mae"], name))
    best = valid[ranked[0]]
    upper = best["mae"] if best.get("ci") is None else max(best["mae"], best["ci"][1])
    return [name for name in ranked if valid[name]["mae"] <= upper]


def choose_fastest(
    scores: dict[str, dict],
    seconds: dict[str, float | None],
    *,
    speed_tolerance: float = DEFAULT_SPEED_TOLERANCE,
) -> dict:
    """Choose among the tied candidates (:func:`tied_candidates`) the one with the fastest force
    call; the record that says why, for ``report.json``.

    seconds: {name: wall seconds of one force call on one frame} (lower is faster); a tied
    candidate without a timing is only chosen when none of the tied ones has one (then the best
    MAE wins). Returns {model, best_on_validation, tied, rule, candidates: [{name, mae, ci,
    seconds_per_call, tied}], reason}.
    """
    tied = tied_candidates(scores)
    timed = [name for name in tied if _finite(seconds.get(name))]
    if timed:
        fastest = min(seconds[name] for name in timed)
        equally_fast = [name for name in timed if seconds[name] <= fastest * (1.0 + speed_tolerance)]
        chosen = equally_fast[0]  # tied is ordered by MAE, so the lowest MAE among the equally fast
    else:
        chosen = tied[0]
    best = tied[0]
    if len(tied) == 1:
        reason = f"{best} has the lowest validation MAE; no other candidate lies within its interval"
    elif not timed:
        reason = f"{best} has the lowest validation MAE; no tied candidate was timed"
    elif chosen == best:
        reason = (
            f"{best} has the lowest validation MAE and is, within timing noise, the fastest of the {len(tied)} tied candidates"
        )
    else:
        reason = (
            f"{chosen}'s validation MAE lies within the interval of the best ({best}), "
            f"and its force call takes {seconds[chosen]:.3g} s against {_seconds_text(seconds.get(best))} for {best}"
        )
    return {
        "model": chosen,
        "best_on_validation": best,
        "tied": tied,
        "rule": RULE.format(tol=speed_tolerance),
        "candidates": [
            {
                "name": name,
                "mae": entry.get("mae"),
                "ci": entry.get("ci"),
                "seconds_per_call": seconds.get(name),
                "tied": name in tied,
            }
            for name, entry in scores.items()
        ],
        "reason": reason,
    }


def seconds_per_call(
    call: Callable[[], object],
    *,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` calls after ``warmup`` untimed ones
    (the first calls pay for compilation and caches; the median ignores a stray slow call)."""
    if repeats < 1:
        raise AdaScaleError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _seconds_text(value: float | None) -> str:
    return "no timing" if not _finite(value) else f"{value:.3g} s"
