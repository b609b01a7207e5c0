"""keep_freed_memory: large blocks are reused instead of re-mapped (counted in page faults, not timed)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

#: Allocate, touch and free a 64 MiB block, then count the minor page faults of doing it again.
#: glibc maps such a block freshly each time (one fault per 4 KiB page, ~16,000); with freed
#: memory kept, the second block reuses the first's pages.
FAULTS_OF_SECOND_BLOCK = """
import resource, sys
if sys.argv[1] == "keep":
    from adascale.runtime import keep_freed_memory
    assert keep_freed_memory()
def touch():
    block = bytearray(64 * 2**20)
    block[::4096] = bytes([1]) * (len(block) // 4096)  # write one byte in every page
    del block
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_block_faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", FAULTS_OF_SECOND_BLOCK, mode], capture_output=True, text=True, check=True)
    return int(run.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_keep_freed_memory_reuses_large_blocks():
    pages = 64 * 2**20 // 4096
    assert second_block_faults("default") > pages // 2  # re-mapped: a fault per page
    assert second_block_faults("keep") < pages // 20  # reused
