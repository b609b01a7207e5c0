"""Atomic file output: readers never see a half-written file, and a failed write leaves the old one intact."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # created by the writer, with the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary binary file beside ``path``, then atomically replace ``path``."""
    with atomic_output(path) as temp, open(temp, "wb") as file:
        write(file)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented, strict JSON, atomically.

    NaN and infinity are not JSON (jq, JavaScript and most parsers reject them), so they raise
    ``ValueError`` here instead of producing a file other tools cannot read; reports write
    ``null`` for undefined values.
    """
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, lambda file: file.write(text.encode()))
