"""One torch thread for these tests: tiny tensors on a shared 2-core machine run far faster without
OpenMP hand-offs, and results do not depend on the thread count."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
