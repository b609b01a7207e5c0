"""The provenance block of a report: the code's commit as git sees it, and None outside a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import adascale
from adascale import provenance as provenance_module
from adascale.provenance import provenance, source_commit


def test_the_commit_is_the_checkouts_head():
    here = Path(adascale.__file__).parent
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = source_commit()
    if head.returncode != 0:  # installed outside a git checkout
        assert commit is None
    else:
        assert commit is not None and commit.removesuffix("+dirty") == head.stdout.strip()


def test_without_git_the_commit_is_none_and_the_rest_is_filled(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance_module.subprocess, "run", no_git)
    block = provenance("adascale run --quick")
    assert block["commit"] is None and block["command"] == "adascale run --quick"
    assert block["adascale"] == adascale.__version__ and "cores" in block["machine"] and block["finished"].endswith("Z")


def test_a_commit_read_at_the_start_is_kept(monkeypatch):
    """A long run stamps the commit it started from, not whatever HEAD is when it finishes."""

    def moved_on(*args, **kwargs):
        raise AssertionError("the commit must not be read again at the end")

    monkeypatch.setattr(provenance_module.subprocess, "run", moved_on)
    assert provenance("adascale run", commit="abc123")["commit"] == "abc123"
