"""Where a result came from: the command, the code (adascale version and git commit) and the machine.

Written into every run's report so a figure quoted anywhere can be traced to the code and the
command that produced it (``docs/results_page.py`` stamps its tables from it).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def source_commit() -> str | None:
    """The git commit of the adascale source tree (``+dirty`` with uncommitted changes), or None
    when adascale is not run from a git checkout (e.g. installed from a wheel)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, check=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance(command: str | None = None, commit: str | None = None) -> dict:
    """``{command, adascale, commit, finished, machine}`` for a report (``finished``: UTC, ISO 8601).

    ``commit``: the source commit the work started from (a long run should read it at its start: the
    tree may move on while it runs); None reads it now."""
    import torch

    from adascale import __version__

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": command,
        "adascale": __version__,
        "commit": commit or source_commit(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {cores} cores, torch {torch.__version__}",
    }
