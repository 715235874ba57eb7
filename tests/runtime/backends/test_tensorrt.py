"""TensorRT backend: the engine header (our own format, crafted here), its checks, and clear
refusals without TensorRT or a GPU. Running an engine needs both (marked ``trt``/``gpu``)."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError, ManifestError
from cdiqa.manifest import load_manifest
from cdiqa.runtime.backends import get_backend
from cdiqa.engine_format import (ENGINE_MAGIC, EngineHeader, check_engine_header, pack_engine,
                                 plugin_hash, read_engine_header)
from cdiqa.gpu import gpu_info

HEADER = EngineHeader(trt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3",
                      compute_capability="9.0", plugin_hash="f" * 64, onnx_sha256="0" * 64,
                      precision="fp16", domain="natural",
                      profile={"ref": [[1, 3, 64, 64], [1, 3, 384, 512], [8, 3, 1088, 1920]]})
HERE = dict(trt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
            plugin_hash="f" * 64)
REBUILD = r"Rebuild it on this machine: `iqa-export build BUNDLE --precision fp16 --domain natural`"


def test_header_round_trip() -> None:
    data = pack_engine(HEADER, b"PLAN")
    assert data.startswith(ENGINE_MAGIC)
    header, offset = read_engine_header(data)
    assert header == HEADER and data[offset:] == b"PLAN"


@pytest.mark.parametrize("data, message", [
    (b"TRTPLAN\0" + b"x" * 16, r"Header for engine 'e': got b'TRTPLAN\\x00', expected the magic"),
    (ENGINE_MAGIC + struct.pack("<I", 999) + b"{}", r"Header length for engine 'e': got 999"),
    (ENGINE_MAGIC + struct.pack("<I", 5) + b"{nope", r"Header for engine 'e': got Expecting"),
    (ENGINE_MAGIC + struct.pack("<I", 13) + b'{"format": 7}', r"Header format for engine 'e': "
                                                               r"got 7, expected 1"),
    (ENGINE_MAGIC + struct.pack("<I", 13) + b'{"format": 1}', r"Header for engine 'e': got "
                                                               r"EngineHeader.__init__"),
])
def test_bad_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_engine_header(data, "e")


def test_matching_header_passes() -> None:
    check_engine_header(HEADER, **HERE)
    check_engine_header(HEADER, **HERE, onnx_sha256="0" * 64)


@pytest.mark.parametrize("change, message", [
    (dict(trt_version="10.9.0.1"), r"TensorRT version for engine 'e': got 10.8.0.43 \(built "
                                   r"with\), expected 10.9.0.1 \(installed\)"),
    (dict(gpu_name="NVIDIA H200"), r"GPU for engine 'e': got NVIDIA H100 80GB HBM3 \(sm 9.0, "
                                   r"built on\), expected NVIDIA H200"),
    (dict(compute_capability="8.9"), r"GPU for engine 'e'.*expected .*sm 8.9"),
    (dict(plugin_hash="e" * 64), r"Plugin hash for engine 'e': got ffff"),
    (dict(onnx_sha256="1" * 64), r"ONNX graph for engine 'e': got built from 0000.*"
                                 r"expected 1111.*\(the bundle's graph now\)"),
])
def test_mismatches_are_refused_with_the_rebuild_command(change: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message + r".*" + REBUILD):
        check_engine_header(HEADER, **{**HERE, **change}, name="e")


def test_compatible_engines_relax_their_checks() -> None:
    vc = replace(HEADER, version_compatible=True)
    check_engine_header(vc, **{**HERE, "trt_version": "10.13.0.35"})  # same major
    with pytest.raises(ManifestError, match=r"TensorRT version"):
        check_engine_header(vc, **{**HERE, "trt_version": "11.4.0.106"})
    hc = replace(HEADER, hardware_compatible=True)
    check_engine_header(hc, **{**HERE, "gpu_name": "NVIDIA A10", "compute_capability": "8.6"})
    with pytest.raises(ManifestError, match=r"Compute capability for engine 'e': got 7.5 "
                                            r"\(Tesla T4\), expected >= 8.0"):
        check_engine_header(hc, **{**HERE, "gpu_name": "Tesla T4", "compute_capability": "7.5"},
                            name="e")


def test_plugin_hash_follows_the_plugin_contract(tiny_bundle: Path) -> None:
    plugin = load_manifest(tiny_bundle).plugin
    h = plugin_hash(plugin)
    assert h == plugin_hash(plugin) and len(h) == 64
    assert plugin_hash(replace(plugin, attributes={"k": 7})) != h
    assert plugin_hash(replace(plugin, version="2")) != h


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


def test_gpu_probe_refuses_without_a_gpu() -> None:
    if not _lazy.available("cuda.bindings"):
        pytest.skip("cuda-python is not installed")
    try:
        info = gpu_info(0)
    except BackendUnavailable as exc:
        assert str(exc).startswith("TensorRT needs an NVIDIA GPU")
        assert "backend='onnxruntime'" in str(exc) or "could not start" in str(exc)
    else:
        pytest.skip(f"a GPU is present here ({info.name})")


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
