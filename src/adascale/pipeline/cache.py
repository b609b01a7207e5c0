"""Cached pipeline stages: each stage's outputs are reused while its inputs and settings are unchanged.

A stage is keyed by a hash of its settings, the adascale version and the keys of the stages it
reads, so changing one setting redoes that stage and everything downstream, nothing else. A stage's marker
(``DIR/.stages/<name>.json``) is written only after the stage finished, so a killed run redoes
the unfinished stage (which may resume its own work, e.g. training from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from adascale import __version__
from adascale.files import atomic_output
from adascale.layout import RunLayout


def stable_hash(payload: object) -> str:
    """Short hex digest of a JSON-serialisable payload, independent of key order."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """What a stage's output depends on: its settings and the earlier stages whose outputs it reads."""

    settings: object
    after: tuple[str, ...] = ()


def stage_key(name: str, settings: object, upstream: list[str]) -> str:
    """The key of stage ``name``: its settings, the keys of the stages it reads, the adascale version."""
    return stable_hash({"stage": name, "settings": settings, "after": upstream, "adascale": __version__})


@dataclass
class StageRunner:
    """Runs named stages under ``root``, skipping those whose key matches a finished marker."""

    root: Path
    console: Console = field(default_factory=Console)
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, settings: object, work: Callable[[], object], *, after: tuple[str, ...] = ()) -> bool:
        """Run ``work`` unless stage ``name`` already finished with the same inputs.

        ``after`` names the earlier stages whose outputs this stage reads: their keys enter this
        one's, so any upstream change invalidates it. Returns True if the work ran.
        """
        key = stage_key(name, settings, [self.keys[a] for a in after])
        self.keys[name] = key
        marker = RunLayout(self.root).stage_marker(name)
        if marker.exists() and json.loads(marker.read_text()).get("key") == key:
            self.timings[name] = 0.0
            self.console.print(f"[dim]• {name}: cached[/dim]")
            return False
        start = time.perf_counter()
        # A plain line rather than a live spinner: the stages show their own progress bars,
        # and rich allows one live display at a time.
        self.console.print(f"[bold]▶ {name}[/bold] …")
        work()
        elapsed = time.perf_counter() - start
        self.timings[name] = elapsed
        marker.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(marker) as tmp:
            tmp.write_text(json.dumps({"key": key, "seconds": elapsed, "finished": time.time()}))
        self.console.print(f"[green]✓ {name}[/green] in {elapsed:.1f} s")
        return True

    def run_plan(self, plan: dict[str, Stage], work: dict[str, Callable[[], object]]) -> list[str]:
        """Run every stage of ``plan`` in order with its ``work``; returns the names that ran."""
        if set(work) != set(plan):
            raise ValueError(f"stages without work or without a plan: {sorted(set(work) ^ set(plan))}")
        return [name for name, stage in plan.items() if self.run(name, stage.settings, work[name], after=stage.after)]
