"""Unit constants. Internally adascale uses ASE units (Å, eV, eV/Å); reports default to kJ/mol/nm."""

from __future__ import annotations

from adascale.errors import AdaScaleError

#: kJ/mol per eV (CODATA 2018 exact: e * N_A / 1000).
KJ_MOL_PER_EV = 96.48533212331002
#: 1 eV/Å expressed in kJ/mol/nm.
KJ_MOL_NM_PER_EV_A = KJ_MOL_PER_EV * 10.0
#: 1 eV/Å expressed in meV/Å.
MEV_A_PER_EV_A = 1000.0
NM_PER_A = 0.1
#: 1 eV/Å³ in bar (1 eV/Å³ = 160.21766 GPa).
BAR_PER_EV_A3 = 1.602176634e6

#: Force units a report may be written in, as the factor from eV/Å.
FORCE_UNITS: dict[str, float] = {
    "kJ/mol/nm": KJ_MOL_NM_PER_EV_A,
    "meV/A": MEV_A_PER_EV_A,
    "eV/A": 1.0,
}


def force_unit_factor(unit: str) -> float:
    """Factor converting eV/Å to ``unit``; raises a clear error for unknown units."""
    try:
        return FORCE_UNITS[unit]
    except KeyError:
        raise AdaScaleError(f"unknown force unit {unit!r}; choose one of {', '.join(FORCE_UNITS)}") from None
