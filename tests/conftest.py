"""Shared fixtures: tiny images and an untrained model, seeded and fast."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def natural_image() -> np.ndarray:
    """A 96x128 crop of scikit-image's astronaut, float32 RGB in [0, 1]."""
    from skimage import data

    return (data.astronaut()[100:196, 150:278].astype(np.float32) / 255)
