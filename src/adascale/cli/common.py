"""Small helpers shared by the CLI verbs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from adascale.files import write_json

THREADS_HELP = "CPU threads for torch (default: torch's choice)."


def write_report(path: Path | None, report: dict, console: object) -> None:
    """Write a verb's report as strict JSON (atomically) when ``--json`` was given, and say where."""
    if path is None:
        return
    write_json(Path(path), report)
    console.print(f"report written to {path}")


@contextmanager
def stage_progress(console) -> Iterator[Callable[[str, int, int, str], None]]:
    """A rich display whose callback ``(stage, done, total, status)`` keeps one bar per stage."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int, status: str) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, status="")
            progress.update(tasks[stage], completed=done, total=total, status=status)

        yield update
