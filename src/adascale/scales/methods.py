"""The names of the report's methods (the keys of its ``methods`` map), defined once for every stage that writes or reads them.

Fixed scales are named from their scale (``fixed_s0``, ``fixed_s0.5``, ``fixed_s1``) and
recognised by that definition, not by a prefix; the subsets are :data:`adascale.data.regimes.SUBSETS`.
"""

from __future__ import annotations

BEST_GLOBAL_S = "best_global_s"
ORACLE_HARD = "oracle_hard"
ORACLE_CONTINUOUS = "oracle_continuous"
ORACLE_POOL = "oracle_pool"
ROUTER = "router"  # the router selected on validation; router_<kind> for each kind tried
ROUTER_FORCE_MIXING = "router_force_mixing"
MIXTURE = "mixture"
MIXTURE_FORCE_MIXING = "mixture_force_mixing"
#: The methods that come from the conservative-mixture stage of a run.
MIXTURE_METHODS: tuple[str, ...] = (ROUTER_FORCE_MIXING, MIXTURE_FORCE_MIXING, MIXTURE)


def fixed_name(s: float) -> str:
    """Report name of a fixed scale: ``fixed_s0``, ``fixed_s0.5``, ``fixed_s1``."""
    return f"fixed_s{float(s):g}"


def router_name(kind: str) -> str:
    """Report name of one router kind: ``router_hard``, ``router_soft``."""
    return f"{ROUTER}_{kind}"


def fixed_methods(methods: dict[str, dict]) -> list[str]:
    """The names of a report's fixed-scale methods: those named by :func:`fixed_name` of their ``s``."""
    return [name for name, entry in methods.items() if "s" in entry and name == fixed_name(entry["s"])]
