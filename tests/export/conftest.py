"""One tiny bundle per test session (exported once, shared with tests/runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of the 8-channel model with 'natural' and 'medical' profiles (read-only use)."""
    from cdiqa.export.testing import tiny_bundle

    out = tmp_path_factory.getbasetemp() / "tiny-bundle"
    tiny_bundle(out)
    return out
