"""Small helpers shared by the CLI verbs."""

from __future__ import annotations

from pathlib import Path

from adascale.files import write_json


def write_report(path: Path | None, report: dict, console: object) -> None:
    """Write a verb's report as strict JSON (atomically) when ``--json`` was given, and say where."""
    if path is None:
        return
    write_json(Path(path), report)
    console.print(f"report written to {path}")
