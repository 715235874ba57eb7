"""Shared fixtures: tiny images and a tiny bundle, committed under tests/fixtures (made by
tests/fixtures/make_fixtures.py), so that tests/runtime needs neither torch nor scikit-image."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def large_natural_image() -> np.ndarray:
    """A 192x256 crop of scikit-image's astronaut (rows 64:256, columns 128:384; the file
    tests/fixtures/natural.png), float32 RGB in [0, 1]."""
    from PIL import Image

    return np.asarray(Image.open(FIXTURES / "natural.png"), np.float32) / 255


@pytest.fixture(scope="session")
def natural_image(large_natural_image: np.ndarray) -> np.ndarray:
    """A 96x128 crop of scikit-image's astronaut (rows 100:196, columns 150:278)."""
    return large_natural_image[36:132, 22:150].copy()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A copy of tests/fixtures/tiny-bundle (the 8-channel model with 'natural' and 'medical'
    profiles): a test may alter it only in a copy of its own; the copy keeps the repo clean."""
    out = tmp_path_factory.getbasetemp() / "tiny-bundle"
    if not out.exists():
        shutil.copytree(FIXTURES / "tiny-bundle", out)
    return out
