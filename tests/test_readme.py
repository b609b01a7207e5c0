"""The README's Python quickstart runs as written (a doctest, so it cannot rot), and its links point to files."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.integration  # OpenMM and training, ~10 s
def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``>>>`` example of README.md, in order, in a scratch directory (it writes quickstart/)."""
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(
        str(README), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, "README.md has no doctest examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} README examples failed (see the output above)"


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"])
def test_relative_links_exist(page: Path) -> None:
    """Relative Markdown links of the README and docs/ pages name files that exist."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
