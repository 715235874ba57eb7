"""``iqa-export build``: cache key, profiles, bundle record, and refusal without
TensorRT. Building a real engine needs TensorRT and a GPU (marked ``trt``/``gpu``, skipped
here with the reason; never replaced by a fake of TensorRT)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError
from cdiqa.engine_format import EngineHeader, engine_key, pack_engine, read_engine_header
from cdiqa.export.engine import (BuildConfig, ShapeProfile, _write_into_bundle,
                                 engine_from_bundle, parse_profile, profile_from_options)
from cdiqa.export.engine_cache import cache_lookup, cache_store, engine_cache_key
from cdiqa.manifest import load_manifest
from cdiqa.runtime.backends.tensorrt import find_engine

KEY_INPUTS = dict(onnx_sha256="a" * 64, plugin_hash="b" * 64, trt_version="10.8.0.43",
                  gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp16",
                  profile=ShapeProfile().tensors(), version_compatible=False,
                  hardware_compatible=False)
CHANGES = {"onnx_sha256": "c" * 64, "plugin_hash": "d" * 64, "trt_version": "11.4.0.106",
           "gpu_name": "NVIDIA H200", "compute_capability": "8.7", "precision": "int8",
           "profile": ShapeProfile(max=(4, 512, 512)).tensors(), "version_compatible": True,
           "hardware_compatible": True}
NO_TRT = "TensorRT is not installed: building a TensorRT engine needs the 'tensorrt' Python " \
         "package"


def test_cache_key_is_stable() -> None:
    assert engine_cache_key(**KEY_INPUTS) == engine_cache_key(**dict(KEY_INPUTS))
    assert len(engine_cache_key(**KEY_INPUTS)) == 64


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_cache_key_changes_with_every_input(name: str) -> None:
    assert set(CHANGES) == set(KEY_INPUTS)  # every input of the key is exercised
    assert engine_cache_key(**{**KEY_INPUTS, name: CHANGES[name]}) != \
        engine_cache_key(**KEY_INPUTS)


def test_cache_store_and_lookup(tmp_path: Path) -> None:
    assert cache_lookup(tmp_path, "k") is None
    cache_store(tmp_path / "c", "k", b"engine")
    assert cache_lookup(tmp_path / "c", "k") == b"engine"


def test_profiles_parse_and_check() -> None:
    p = parse_profile("1x64x64:4x384x512:8x1088x1920")
    assert p.tensors()["ref"] == [[1, 3, 64, 64], [4, 3, 384, 512], [8, 3, 1088, 1920]]
    assert p.tensors()["roi"] == [[1, 4], [4, 4], [8, 4]]
    assert profile_from_options(None, "1x96x128", None, None).min == (1, 96, 128)
    with pytest.raises(ConfigError, match=r"Shape for profile 'min': got 1x32x64, expected "
                                          r"batch >= 1 and height, width >= 64"):
        profile_from_options(None, "1x32x64")
    with pytest.raises(ConfigError, match=r"Order for profile 'min/opt/max'"):
        parse_profile("1x64x64:9x64x64:8x64x64")
    with pytest.raises(ConfigError, match=r"Options for command 'build'"):
        profile_from_options("1x64x64:1x64x64:1x64x64", "1x64x64")
    with pytest.raises(ConfigError, match=r"Shape for option '--max-shape': got '8x1088'"):
        profile_from_options(None, None, None, "8x1088")
    with pytest.raises(ConfigError, match=r"Precision for option '--precision': got 'bf16'"):
        BuildConfig(precision="bf16").check()  # type: ignore[arg-type]


def test_engine_is_recorded_in_the_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    m = load_manifest(bundle)
    header = EngineHeader(trt_version="10.8.0", gpu_name="G", compute_capability="8.7",
                          plugin_hash="p", onnx_sha256="o", precision="fp32", domain="natural")
    key = engine_key("natural", "fp32", "sm_87")
    path = _write_into_bundle(m, key, pack_engine(header, b"plan"))
    m2 = load_manifest(bundle)  # verifies every hash, the engine's included
    assert path == find_engine(m2, "natural", "fp32", "sm_87")
    assert path.relative_to(bundle).as_posix() == "engines/natural.fp32.sm_87.engine"
    assert read_engine_header(path.read_bytes())[0] == header
    with pytest.raises(BackendUnavailable, match=r"none for natural/fp16/sm_87.*Build it: "
                                                 r"`iqa-export build .* --precision fp16"):
        find_engine(m2, "natural", "fp16", "sm_87")


def test_build_without_tensorrt_refuses_in_one_line(tiny_bundle: Path) -> None:
    if _lazy.available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailable, match=NO_TRT + r".*install 'cdiqa\[trt\]' on a "
                                                          r"machine with an NVIDIA GPU\.$"):
        engine_from_bundle(tiny_bundle, BuildConfig(precision="fp16"))


def test_cli_build_without_tensorrt_exits_1(tiny_bundle: Path, monkeypatch, capsys) -> None:
    if _lazy.available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    from cdiqa.cli import main

    monkeypatch.setattr(sys, "argv", ["iqa-export", "build", str(tiny_bundle), "--precision",
                                      "fp16", "--min-shape", "1x64x64"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: " + NO_TRT)


@pytest.mark.parametrize("flag", ["--shapes", "--profile"])
def test_cli_build_shapes_option(tiny_bundle: Path, monkeypatch, capsys, flag: str) -> None:
    """``--shapes`` is the optimization profile (``--profile`` names a domain head in
    ``export``); the old spelling still works, hidden, with a note."""
    from cdiqa.cli import main

    monkeypatch.setattr(sys, "argv", ["iqa-export", "build", str(tiny_bundle), flag, "1x64x64"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: Profile for option '--shapes': got '1x64x64', expected MIN:OPT:MAX" in err
    assert ("build --profile is deprecated; use --shapes" in err) == (flag == "--profile")
    monkeypatch.setattr(sys, "argv", ["iqa-export", "build", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--shapes" in out and "--profile" not in out


@pytest.mark.trt
@pytest.mark.gpu
def test_build_fp32_engine_on_this_gpu(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT (cdiqa[trt])")
    from cdiqa.gpu import gpu_info

    try:
        gpu = gpu_info(0)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    config = BuildConfig(profile=ShapeProfile((1, 64, 64), (2, 64, 96), (2, 128, 128)),
                         timing_cache=str(tmp_path / "timing.cache"),
                         cache_dir=str(tmp_path / "engines"))
    first = engine_from_bundle(bundle, config)
    assert not first.cached and (tmp_path / "timing.cache").is_file()
    assert first.header.compute_capability == gpu.compute_capability
    assert engine_from_bundle(bundle, config).cached
