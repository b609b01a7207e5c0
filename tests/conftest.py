"""Shared test fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    """One torch thread per test: tiny tensors on a shared 2-core machine (pytest -n 2) run far faster
    without OpenMP hand-offs, and no result depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
