"""The driver-API loader: geometry, argument packing, clear errors without a GPU; and the
CPU-side parts of benchmarks/gpu_check.py (the check itself needs a GPU)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError, KernelError, ShapeError
from cdiqa.kernels import loader
from cdiqa.masking import masking_stats

ROOT = Path(__file__).resolve().parents[2]


def _gpu_usable() -> bool:
    try:
        loader.MaskingKernel().close()
    except Exception:
        return False
    return True


HAS_GPU = _gpu_usable()


# ----------------------------------------------------------------------------- no GPU here


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: the no-GPU error cannot be observed")
def test_without_gpu_backend_unavailable_one_line():
    with pytest.raises(BackendUnavailable) as info:
        loader.MaskingKernel()
    msg = str(info.value)
    assert "\n" not in msg
    # no libcuda: "CUDA kernels need an NVIDIA GPU and driver: <why>"; no cuda-python: the
    # _lazy message naming the extra
    assert msg.startswith("CUDA kernels need an NVIDIA GPU") or "cdiqa[cuda]" in msg


def test_without_cuda_python_names_the_extra(monkeypatch):
    for name in ("cuda.bindings.driver",):
        monkeypatch.setitem(sys.modules, name, None)  # import of it now fails
    with pytest.raises(BackendUnavailable, match=r"cdiqa\[cuda\]"):
        loader.MaskingKernel()


def test_check_names_the_curesult():
    cu = pytest.importorskip("cuda.bindings.driver")
    with pytest.raises(KernelError, match=r"CUDA call cuInit failed: CUDA_ERROR_NO_DEVICE \(100\)"):
        loader._check(cu, (cu.CUresult.CUDA_ERROR_NO_DEVICE,), "cuInit")
    assert loader._check(cu, (cu.CUresult.CUDA_SUCCESS, 7), "x") == 7
    assert loader._check(cu, (cu.CUresult.CUDA_SUCCESS, 1, 2), "x") == (1, 2)
    assert loader._check(cu, (cu.CUresult.CUDA_SUCCESS,), "x") is None


# ----------------------------------------------------------------------------- geometry


def test_geometry():
    assert loader.tiles_per_plane(96, 128) == 12
    assert loader.tiles_per_plane(1, 1) == 1 and loader.tiles_per_plane(33, 32) == 2
    # many planes: one block per plane, no pass 2
    assert loader.tiles_per_block(8, 128, 96, 128) == 12
    assert loader.segments_per_plane(8, 128, 96, 128) == 1
    assert loader.workspace_size(8, 128, 96, 128) == 0
    assert loader.stats_grid(8, 128, 96, 128) == (1, 1024, 1)
    # few planes, large maps: segments of 2 tiles, about 2048 blocks, pass 2
    assert loader.tiles_per_block(1, 32, 480, 270) == 2
    assert loader.segments_per_plane(1, 32, 480, 270) == 68
    assert loader.stats_grid(1, 32, 480, 270) == (68, 32, 1)
    assert loader.workspace_size(1, 32, 480, 270) == 32 * 68 * 8
    # tiny: one tile, one block per plane
    assert loader.stats_grid(2, 3, 1, 1) == (1, 6, 1) and loader.workspace_size(2, 3, 1, 1) == 0
    assert loader.reduce_grid(8, 128) == 128 and loader.reduce_grid(1, 3) == 1


def test_grid_uses_z_past_65535_planes():
    assert loader.stats_grid(1024, 256, 1, 1) == (1, 65535, 5)
    gx, gy, gz = loader.stats_grid(65535, 65535, 1, 1)
    assert (gy, gz) == (65535, 65535)
    with pytest.raises(ShapeError, match="Split the batch"):
        loader.check_launch(65536, 65535, 1, 1, 3, "float32")
    with pytest.raises(ShapeError, match="Split the batch"):
        loader.check_launch(1, 1, 1 << 30, 1 << 30, 3, "float32")


@pytest.mark.parametrize("args, match", [
    ((0, 1, 8, 8, 3, "float32"), "e.B"),
    ((1, 1, 8, 0, 3, "float32"), "e.W"),
    ((1, 1, 8, (1 << 30) + 1, 3, "float32"), "e.W"),
    ((1, 1, 8, 8, 4, "float32"), "Window"),
    ((1, 1, 8, 8, 0, "float32"), "Window"),
    ((1, 1, 8, 8, 3, "bfloat16"), "Dtype"),
])
def test_check_launch_rejects(args, match):
    with pytest.raises((ShapeError, ConfigError), match=match):
        loader.check_launch(*args)


# ----------------------------------------------------------------------------- packing


def test_params_point_at_the_values_in_order():
    p = loader._Params([(ctypes.c_void_p, 0xDEAD0000), (ctypes.c_void_p, 0), (ctypes.c_int, -3),
                        (ctypes.c_int, 96)])
    ptrs = (ctypes.c_void_p * 4).from_address(p.address)
    assert ctypes.c_void_p.from_address(ptrs[0]).value == 0xDEAD0000
    assert ctypes.c_void_p.from_address(ptrs[1]).value is None  # NULL
    assert ctypes.c_int.from_address(ptrs[2]).value == -3
    assert ctypes.c_int.from_address(ptrs[3]).value == 96


def test_address_and_stream_handles():
    class Torchish:
        def data_ptr(self):
            return 1234

    class Cai:
        __cuda_array_interface__ = {"data": (5678, False)}

    class Stream:
        cuda_stream = 42

    assert loader._address(Torchish(), "e") == 1234
    assert loader._address(Cai(), "e") == 5678
    assert loader._address(99, "e") == 99 and loader._address(None, "ws") == 0
    with pytest.raises(ConfigError, match="Pointer for argument 'e'"):
        loader._address("x", "e")
    assert loader._stream_handle(Stream()) == 42
    assert loader._stream_handle(None) == 0 and loader._stream_handle(7) == 7


# ----------------------------------------------------------------------------- with a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no usable NVIDIA GPU and driver")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stats_match_the_reference_on_gpu(dtype):
    from cdiqa.tolerances import relative_error, tolerance

    rng = np.random.default_rng(0)
    e = rng.standard_normal((2, 3, 45, 70)).astype(dtype)
    a = np.abs(rng.standard_normal((2, 3, 45, 70))).astype(dtype)
    g, s = np.full(3, 2.0, np.float32), np.full(3, 0.5, np.float32)
    with loader.MaskingKernel() as kernel:
        out = kernel.stats(e, a, g, s, 5)
    ref = masking_stats(e.astype(np.float64), a.astype(np.float64), g, s, 5)
    assert relative_error(out, ref) < tolerance("cuda", {"float32": "fp32",
                                                         "float16": "fp16"}[dtype]).rtol


# ----------------------------------------------------------------------------- gpu_check (CPU parts)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" /
                                                  "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("gpu_check", None)


def test_gpu_check_arguments(gpu_check, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    args = gpu_check.parse_args([])
    assert args.out == "gpu_check_out" and args.iters >= 50 and not args.dry_run
    monkeypatch.setenv("OUT", "/tmp/x")
    assert gpu_check.parse_args([]).out == "/tmp/x"
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--iters", "1"])


def test_gpu_check_cases_cover_the_brief(gpu_check):
    cases = gpu_check.correctness_cases()
    assert {c.dtype for c in cases} == {"float32", "float16"}
    assert any(c.H == c.W == 1 for c in cases)
    assert any(c.k > max(c.H, c.W) for c in cases)                # window larger than the map
    assert {1, 3, 5, 7} <= {c.k for c in cases}
    assert any(c.k // 2 > 8 for c in cases) and any(3 < c.k // 2 <= 8 for c in cases)
    assert max(c.B for c in cases) == 16 and max(c.C for c in cases) == 256
    assert any((c.H, c.W) == (96, 128) for c in cases)
    assert any((c.H, c.W) == (270, 480) for c in cases)
    assert all(c.k % 2 == 1 for c in cases)
    assert len({c.name for c in cases}) == len(cases)
    assert len(gpu_check.correctness_cases(quick=True)) < len(cases)


def test_gpu_check_inputs_and_reference(gpu_check):
    case = gpu_check.Case(2, 3, 7, 5, 3, "float16")
    x = gpu_check.make_inputs(case, 1)
    assert x["e"].dtype == x["a"].dtype == np.float16 and x["gamma"].dtype == np.float32
    assert x["e"].shape == (2, 3, 7, 5) and (x["a"] >= 0).all() and (x["e"] == 0).any()
    assert (x["gamma"] > 0).all() and (x["sigma"] > 0).all()
    assert not np.array_equal(x["e"], gpu_check.make_inputs(case, 2)["e"])  # fresh per seed
    ref = gpu_check.reference(x, 3)
    assert ref.shape == (2, 2, 3) and ref.dtype == np.float64
    # the reference is taken on the FP16-rounded values themselves
    np.testing.assert_array_equal(ref, masking_stats(x["e"].astype(np.float64),
                                                     x["a"].astype(np.float64),
                                                     x["gamma"], x["sigma"], 3))
    verdict = gpu_check.judge(ref.astype(np.float32), ref, "float16")
    assert verdict["passed"] and verdict["rtol"] == 2e-3
    bad = ref.astype(np.float32)
    bad[0, 0, 0] = np.nan
    assert not gpu_check.judge(bad, ref, "float32")["passed"]


def test_gpu_check_timing_plan(gpu_check):
    plan = gpu_check.timing_plan()
    names = [b.name for b in plan]
    assert names[0] == "8x128x96x128 k=3 float16" and "8x128x96x128 k=3 float32" in names
    assert "1x32x480x270 k=3 float16" in names and "16x256x48x64 k=3 float32" in names
    b = plan[0]
    assert gpu_check.op_bytes(b) == 2 * 8 * 128 * 96 * 128 * 2 + 8 * 2 * 128 * 4
    assert gpu_check.input_sets(100 << 20, 50 << 20) == 3
    assert gpu_check.input_sets(10 << 20, 60 << 20) == 16
    assert gpu_check.input_sets(4 << 30, 50 << 20) == 2
    table = gpu_check.format_table([{"config": b.name, "fused_us": 12.5, "eager_us": 80.0,
                                     "compile_note": "failed", "speedup_eager": 6.4,
                                     "fused_gbs": 4000.0, "bw_fraction_pct": 90.0}])
    assert "12.5" in table and "failed" in table and "6.40" in table


def test_gpu_check_dry_run(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setenv("CDIQA_CACHE", str(tmp_path / "cache"))
    assert gpu_check.main(["--dry-run", "--quick", "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert data["cases"] and all(r["ref_finite"] for r in data["cases"])
    assert "fused us" in data["table"]
    assert data["build"].get("entries") or data["build"].get("skipped")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.json"]


def test_cuda_python_comes_through_the_lazy_helper(monkeypatch):
    def missing():
        raise BackendUnavailable("CUDA kernels needs 'cuda'; install 'cdiqa[cuda]'.")

    monkeypatch.setattr(_lazy, "cuda_driver", missing)
    with pytest.raises(BackendUnavailable, match=r"cdiqa\[cuda\]"):
        loader.MaskingKernel()
