"""TensorRT backend: clear refusals without TensorRT or a GPU. Running an engine needs both
(marked ``trt``/``gpu``); the engine file format is tests/test_engine_format.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError
from cdiqa.gpu import gpu_info
from cdiqa.manifest import load_manifest
from cdiqa.runtime.backends import get_backend


def test_backend_refuses_without_tensorrt(tiny_bundle: Path) -> None:
    if _lazy.available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailable, match=r"^TensorRT is not installed: the TensorRT "
                                                 r"backend needs .*install 'cdiqa\[trt\]' on a "
                                                 r"machine with an NVIDIA GPU\.$"):
        get_backend("tensorrt").load(load_manifest(tiny_bundle))


def test_backend_refuses_the_cpu(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"Device for backend 'tensorrt': got 'cpu'.*"
                                          r"backend='onnxruntime'"):
        get_backend("tensorrt").load(load_manifest(tiny_bundle), device="cpu")


@pytest.mark.trt
@pytest.mark.gpu
def test_engine_scores_match_onnxruntime(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT (cdiqa[trt])")
    import shutil

    from cdiqa.export.engine import BuildConfig, ShapeProfile, engine_from_bundle
    from cdiqa.runtime import Scorer
    from cdiqa.runtime.preprocess import full_roi
    from cdiqa.tolerances import tolerance

    try:
        gpu_info(0)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    engine_from_bundle(bundle, BuildConfig(profile=ShapeProfile((1, 64, 64), (2, 64, 96),
                                                                (2, 128, 128)),
                                           cache_dir=str(tmp_path / "engines")))
    rng = np.random.default_rng(0)
    refs = [rng.random((64, 96, 3), np.float32) for _ in range(2)]
    dists = [np.clip(r + 0.05 * rng.standard_normal(r.shape), 0, 1).astype(np.float32)
             for r in refs]
    with Scorer.load(bundle, backend="onnxruntime") as ort, \
            Scorer.load(bundle, backend="tensorrt") as trt_scorer:
        np.testing.assert_allclose(trt_scorer.score_batch(refs, dists),
                                   ort.score_batch(refs, dists),
                                   atol=tolerance("onnx_score").atol)
    # CUDA-graph replay runs the same plan: bitwise the same stats (deterministic kernel)
    m = load_manifest(bundle)
    feed = {"ref": np.stack(refs).transpose(0, 3, 1, 2).copy(),
            "dist": np.stack(dists).transpose(0, 3, 1, 2).copy(), "roi": full_roi(2, 64, 96)}
    with get_backend("tensorrt").load(m) as plain, \
            get_backend("tensorrt").load(m, cuda_graph=True) as graph:
        want = plain.infer(feed)
        for _ in range(2):  # capture, then replay
            got = graph.infer(feed)
            assert all(np.array_equal(got[k], want[k]) for k in want)
