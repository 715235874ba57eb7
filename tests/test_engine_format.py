"""The TensorRT engine file of cdiqa: the header (crafted here), its checks and the plugin
hash. Pure functions: no TensorRT, no GPU."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from cdiqa.engine_format import (ENGINE_MAGIC, EngineHeader, check_engine_header, engine_key,
                                 pack_engine, plugin_hash, read_engine_header)
from cdiqa.errors import ManifestError
from cdiqa.manifest import load_manifest

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


def test_engine_key() -> None:
    assert engine_key("natural", "fp16", "sm_90") == "natural/fp16/sm_90"
