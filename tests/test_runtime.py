"""keep_freed_memory: large blocks are reused instead of re-mapped (counted in page faults, not timed);
resolve_device and check_precision: the device a command computes on."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from adascale.errors import AdaScaleError
from adascale.runtime import check_precision, resolve_device

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


CUDA = torch.cuda.is_available()


def test_resolve_device_names_the_cpu_and_picks_a_gpu_only_where_there_is_one():
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    expected = torch.device("cuda" if CUDA else "cpu")
    assert resolve_device(None) == expected and resolve_device("auto") == expected


@pytest.mark.parametrize("name", ["gpu", "tpu", "meta", "cuda:x", ""])
def test_resolve_device_refuses_other_devices_in_one_line(name):
    with pytest.raises(AdaScaleError, match=r"^device must be cpu, cuda or cuda:N, got") as error:
        resolve_device(name)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(CUDA, reason="checks the error where there is no GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_resolve_device_refuses_cuda_without_a_gpu(name):
    with pytest.raises(AdaScaleError, match=rf"^device '{name}': CUDA is not available here .*use cpu$"):
        resolve_device(name)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_resolve_device_gives_the_gpu_and_refuses_one_that_is_not_there():
    assert resolve_device("cuda").type == "cuda" and resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(AdaScaleError, match=r"GPU\(s\)"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_float64_is_refused_on_a_gpu_only():
    check_precision(torch.device("cpu"), torch.float64)
    check_precision(torch.device("cuda"), torch.float32)
    with pytest.raises(AdaScaleError, match=r"^float64 on cuda: models run in float32 on GPUs"):
        check_precision(torch.device("cuda"), torch.float64)
