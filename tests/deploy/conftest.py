"""Fixtures for the deployment tests: a tiny mixture and a periodic water-ion frame."""

from __future__ import annotations

import pytest

from adascale.models.mixture import AdaptiveMixture
from deploy.tiny_models import make_mixture
from models.branch_checks import water_ion_frame


@pytest.fixture(scope="module")
def mixture() -> AdaptiveMixture:
    return make_mixture()


@pytest.fixture
def periodic_frame():
    return water_ion_frame(10, 2, 8.5, seed=1, spacing_jitter=0.1)
