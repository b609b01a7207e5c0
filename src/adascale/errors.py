"""User-facing errors: one line, naming the file, frame and field where there is one.

The command line prints ``error: <message>`` and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class AdaScaleError(Exception):
    """A problem with the user's input or settings (not a bug in adascale)."""


def located(message: str, *, path: object = None, frame: int | None = None, field: str | None = None) -> AdaScaleError:
    """Build an error whose text starts with ``file: frame N: field 'x':`` where known."""
    parts = []
    if path is not None:
        parts.append(str(path))
    if frame is not None:
        parts.append(f"frame {frame}")
    if field is not None:
        parts.append(f"field {field!r}")
    prefix = ": ".join(parts)
    return AdaScaleError(f"{prefix}: {message}" if prefix else message)
