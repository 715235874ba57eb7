"""A tiny bundle and one calibrated copy of it, shared by the calibration tests.

Everything is written under pytest's temporary folders, never into the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: fast settings: a few adaptation steps, small crops and feeds, one thread
FAST = dict(steps=2, batch_size=3, crop=64, feeds=4, feed_size=64, threads=1, plugin=False)


@pytest.fixture(scope="session")
def base_bundle(tmp_path_factory) -> Path:
    """The tiny 8-channel bundle (natural + medical profiles); read-only use."""
    from cdiqa.export.testing import tiny_bundle

    out = tmp_path_factory.getbasetemp() / "calib-base-bundle"
    tiny_bundle(out)
    return out


@pytest.fixture
def bundle(base_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may calibrate."""
    out = tmp_path / "bundle"
    shutil.copytree(base_bundle, out)
    return out


@pytest.fixture(scope="session")
def calibrated(base_bundle, tmp_path_factory):
    """(bundle, report): the tiny bundle with an adapted 'underwater' profile, INT8 and FP16.

    The untrained tiny model may miss the 0.01 gate, so the drop is accepted (and recorded).
    """
    from cdiqa.calibration import CalibConfig, calibrate

    out = tmp_path_factory.getbasetemp() / "calib-underwater"
    shutil.copytree(base_bundle, out)
    report = calibrate(out, CalibConfig(domain="underwater", accept_drop=True, **FAST))
    return out, report


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove a bundle unchanged)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
