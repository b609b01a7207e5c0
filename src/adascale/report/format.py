"""Text formatting shared by the console tables and the Markdown report."""

from __future__ import annotations


def mae_cell(mae: float | None, ci: list[float] | None) -> str:
    """``12.34 [11.90, 12.80]``; ``-`` for an empty subset."""
    if mae is None:
        return "-"
    return f"{mae:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{mae:.2f}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def scales_text(values: list[float]) -> str:
    """A pool or list of scales as ``{0, 0.25, 1}``."""
    return "{" + ", ".join(f"{v:.4g}" for v in values) + "}"


def percent(value: float | None) -> str:
    """A fraction as a percentage; ``-`` when undefined."""
    return "-" if value is None else f"{100 * value:.1f} %"


def gain_cell(value: float | None, ci: list[float] | None = None) -> str:
    """A gain (fraction) in signed percent with its interval: ``+2.5 % [-0.3, +5.1]``; ``-`` when undefined."""
    if value is None:
        return "-"
    text = f"{100 * value:+.1f} %"
    return f"{text} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else text


def method_detail(entry: dict) -> str:
    """The pool or scale a method uses, for a table's last column."""
    if "pool" in entry:
        return scales_text(entry["pool"])
    return f"s = {entry['s']:.4g}" if "s" in entry else ""


def subsets_text(definition: dict) -> str:
    """``ions: Na, Cl; close contact: nearest other ion < 0.6 nm`` and which parts are defaults."""
    text = (
        f"ions: {', '.join(definition['ion_symbols'])}; close contact: nearest other ion < {definition['close_contact_nm']:g} nm"
    )
    names = {"ion_species": "ion species", "close_contact_nm": "close-contact distance"}
    defaults = [names[key] for key in definition.get("defaults", [])]
    return f"{text} (default {' and '.join(defaults)}: not in the set's metadata)" if defaults else text
