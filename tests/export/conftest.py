"""The tiny bundle with an adapted domain, for the tests that serve it (Triton flavours)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def adapted_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with an adapted 'underwater' domain (2 adaptation steps; its plugin
    form and INT8 graph too), as ``iqa-export calibrate`` writes it; read-only use."""
    import shutil

    from cdiqa.calibration import CalibConfig, calibrate

    out = tmp_path_factory.getbasetemp() / "adapted-bundle"
    shutil.copytree(tiny_bundle, out)
    calibrate(out, CalibConfig(domain="underwater", accept_drop=True, steps=2, batch_size=3,
                               crop=64, feeds=4, feed_size=64, threads=1, precisions=("int8",)))
    return out
