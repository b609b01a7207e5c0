"""Shared test fixtures, and the two kinds of test.

``integration``: tests that build a run, train for many steps, run MD or OpenMM simulations or
start processes; a module of them declares ``pytestmark = pytest.mark.integration`` (a single
test, ``@pytest.mark.integration``). Every other test is a ``unit`` test, marked here, so
``pytest -m unit`` (``make test-unit``) runs the cheap suite in under a minute and ``pytest``
runs everything.
"""

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that is not ``integration`` as ``unit``."""
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
