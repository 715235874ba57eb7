"""One contract for every registered backend: feeds are validated (with the tensor's name)
before the backend runs anything, outputs have the manifest's names and shapes.

A backend that cannot load here (TensorRT without a GPU) is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import BackendUnavailable, ConfigError, ShapeError
from cdiqa.manifest import OUTPUT_NAMES, load_manifest
from cdiqa.runtime.backends import REGISTRY, Backend, Session, get_backend
from cdiqa.runtime.preprocess import full_roi


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def session(request, tiny_bundle: Path) -> Session:
    try:
        backend = get_backend(request.param)
        assert isinstance(backend, Backend) and backend.name == request.param
        s = backend.load(load_manifest(tiny_bundle))
    except BackendUnavailable as exc:
        pytest.skip(f"backend '{request.param}' unavailable here: {exc}")
    yield s
    s.close()


def _feed(b: int = 2, h: int = 64, w: int = 96) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.random((b, 3, h, w), np.float32)
    return {"ref": ref, "dist": np.clip(ref + 0.05, 0, 1), "roi": full_roi(b, h, w)}


def test_outputs(session: Session) -> None:
    out = session.infer(_feed())
    assert tuple(out) == OUTPUT_NAMES
    assert all(v.shape == (2, 32) and v.dtype == np.float32 for v in out.values())
    assert np.all(out["counts"][:, :8] == 16 * 24)  # stride 4 of 64x96


BAD_FEEDS = [
    (lambda f: f.update(ref=f["ref"].astype(np.float64)),
     r"Dtype for tensor 'ref': got float64, expected float32"),
    (lambda f: f.update(dist=f["dist"][0]),
     r"Rank for tensor 'dist': got 3 \(shape \(3, 64, 96\)\), expected 4 "
     r"\(batch, 3, height, width\)"),
    (lambda f: f.update(dist=f["dist"][:, :1]),
     r"Channels for tensor 'dist': got 1 \(shape \(2, 1, 64, 96\)\), expected 3"),
    (lambda f: f.update(roi=f["roi"].astype(np.int64)),
     r"Dtype for tensor 'roi': got int64, expected int32"),
    (lambda f: f.update(roi=f["roi"][:, :3]),
     r"Size of axis 1 for tensor 'roi': got 3 .*expected 4"),
    (lambda f: f.update(roi=f["roi"][:1]),
     r"Size of 'batch' \(axis 0\) for tensor 'roi': got 1, expected 2 as in 'ref'"),
    (lambda f: f.update(dist=f["dist"][:, :, :, :64]),
     r"Size of 'width' \(axis 3\) for tensor 'dist': got 64, expected 96 as in 'ref'"),
    (lambda f: f.pop("roi"), r"Inputs for graph 'feed': .*missing \['roi'\]"),
    (lambda f: f.update(image=f["ref"]), r"unknown \['image'\]"),
    (lambda f: f.update(ref=f["ref"].tolist()), r"Type for tensor 'ref': got list"),
]


@pytest.mark.parametrize("change, message", BAD_FEEDS)
def test_feed_is_validated_before_the_backend_runs(session: Session, monkeypatch, change,
                                                   message: str) -> None:
    def never(feed):
        raise AssertionError("the backend was called with an invalid feed")

    monkeypatch.setattr(session, "_infer", never)
    feed = _feed()
    change(feed)
    with pytest.raises(ShapeError, match=message):
        session.infer(feed)


def test_registry_is_lazy_strings_and_names_choices() -> None:
    assert all(isinstance(v, str) and ":" in v for v in REGISTRY.values())
    with pytest.raises(ConfigError, match=r"Did you mean 'tensorrt'"):
        get_backend("tensorrtt")
    with pytest.raises(ConfigError, match=r"expected 'auto' or one of \['onnxruntime', "
                                          r"'tensorrt'\]"):
        get_backend("openvino")
