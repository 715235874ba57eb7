"""The masking kernel builds to PTX and cubin for every listed architecture, cleanly.

Real compiler calls: skipped (with the reason) only where nvcc / NVRTC are absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cdiqa.errors import BackendUnavailable, ConfigError, KernelError
from cdiqa.kernels import MASKING_DIR, MASKING_SOURCE, load_spec, ptx

NVCC = ptx.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found")
needs_nvrtc = pytest.mark.skipif(ptx.nvrtc_version() is None,
                                 reason="NVRTC not loadable (cuda-python + libnvrtc missing)")
STATS_KERNELS = ("masking_stats_f32", "masking_stats_f16")


@pytest.fixture(scope="module")
def nvcc_builds(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDIQA_CACHE", str(tmp_path_factory.mktemp("ptx-cache")))
        return ptx.ptx_for_archs(ptx.ARCHS, compiler="nvcc")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CDIQA_CACHE", str(tmp_path))
    return tmp_path / "ptx"


@needs_nvcc
@pytest.mark.parametrize("arch", ptx.ARCHS)
def test_every_arch_builds_without_warnings(nvcc_builds, arch):
    build = nvcc_builds[arch]
    assert build.compiler.startswith("nvcc ")
    assert f".target {arch}" in build.ptx
    assert build.cubin is not None and build.cubin[:4] == b"\x7fELF"
    assert "warning" not in build.log.lower()
    assert build.entry_names == [*STATS_KERNELS, "masking_reduce"]


@needs_nvcc
@pytest.mark.parametrize("arch", ptx.ARCHS)
def test_ptxas_report_per_arch_has_no_spills(nvcc_builds, arch):
    res = nvcc_builds[arch].resources
    assert set(res) == {*STATS_KERNELS, "masking_reduce"}
    for name, r in res.items():
        assert r.spill_stores == 0 and r.spill_loads == 0, (arch, name, r)
        assert r.stack_bytes == 0, (arch, name, r)
    for name in STATS_KERNELS:
        # __launch_bounds__(256, 5) (4 on sm_75): <= 64 registers, static smem < 48 KiB
        assert res[name].registers <= 64
        assert 0 < res[name].shared_bytes <= 48 * 1024


@needs_nvcc
def test_host_launcher_compiles_for_the_plugin(tmp_path):
    """The TensorRT plugin links masking.cu as an object: host code must build too."""
    out = subprocess.run([NVCC, "-c", "-arch=sm_90", *ptx.NVCC_FLAGS, str(MASKING_SOURCE),
                          "-o", str(tmp_path / "masking.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "warning" not in (out.stdout + out.stderr).lower()


def _cuda_include() -> Path | None:
    roots = [Path("/usr/local/cuda")]
    if NVCC:
        roots.insert(0, Path(NVCC).resolve().parents[1])
    for root in roots:
        if (root / "include" / "cuda_runtime_api.h").is_file():
            return root / "include"
    return None


@pytest.mark.skipif(shutil.which("g++") is None or _cuda_include() is None,
                    reason="g++ or the CUDA headers not found")
def test_header_is_valid_host_cpp(tmp_path):
    """masking.cuh is included by the plugin's plain C++ files."""
    include = _cuda_include()
    src = tmp_path / "use.cpp"
    src.write_text('#include "masking.cuh"\n'
                   "size_t f() { return cdiqa_masking_workspace_size(1, 1, 64, 64); }\n")
    out = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-fsyntax-only",
                          f"-I{include}", f"-I{MASKING_DIR}", str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_nvrtc_builds_the_same_entries(cache, arch):
    build = ptx.ptx_from_cuda(arch, compiler="nvrtc")
    assert build.compiler.startswith("nvrtc ")
    assert build.entry_names == [*STATS_KERNELS, "masking_reduce"]
    assert f".target {arch}" in build.ptx
    assert build.cubin[:4] == b"\x7fELF"
    assert build.resources["masking_stats_f32"].spill_stores == 0


# ----------------------------------------------------------------------------- report parser

NVCC_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'masking_reduce' for 'sm_90'
ptxas info    : Function properties for masking_reduce
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
ptxas info    : Compiling entry function 'masking_stats_f16' for 'sm_90'
ptxas info    : Function properties for masking_stats_f16
    8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 19776 bytes smem
"""
NVRTC_LOG = """\
ptxas info    : Compiling entry function 'k1' for 'sm_87'
ptxas info    : Function properties for k1
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, 384 bytes cmem[0]
"""


def test_parse_ptxas_report_nvcc_format():
    r = ptx.parse_ptxas_report(NVCC_LOG)
    assert r["masking_reduce"] == ptx.KernelResources(registers=32)
    assert r["masking_stats_f16"] == ptx.KernelResources(
        registers=64, spill_stores=12, spill_loads=4, stack_bytes=8, shared_bytes=19776)


def test_parse_ptxas_report_nvrtc_and_old_formats():
    r = ptx.parse_ptxas_report(NVRTC_LOG)
    assert r == {"k1": ptx.KernelResources(registers=40)}
    assert ptx.parse_ptxas_report("no report here") == {}


def test_entry_names_from_ptx():
    text = ".visible .entry a(\n.param .u64 x\n)\n.entry b(\n.weak .entry c("
    assert ptx.ptx_entry_names(text) == ["a", "b", "c"]


# ----------------------------------------------------------------------------- cache


def test_cache_key_changes_with_every_input():
    base = dict(sources={"masking.cu": b"src", "masking.cuh": b"hdr"}, compiler="nvcc 13.0.88",
                arch="sm_90", flags=["-O3"])
    key = ptx.cache_key(**base)
    assert key == ptx.cache_key(**base)
    changed = [
        dict(base, sources={"masking.cu": b"src2", "masking.cuh": b"hdr"}),
        dict(base, sources={"masking.cu": b"src", "masking.cuh": b"hdr2"}),
        dict(base, compiler="nvcc 13.1.0"),
        dict(base, compiler="nvrtc 13.0"),
        dict(base, arch="sm_89"),
        dict(base, flags=["-O2"]),
        dict(base, flags=["-O3", "-DX=1"]),
    ]
    assert len({key, *(ptx.cache_key(**c) for c in changed)}) == len(changed) + 1


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CDIQA_CACHE", str(tmp_path))
    assert ptx.cache_dir() == tmp_path / "ptx"
    monkeypatch.delenv("CDIQA_CACHE")
    assert ptx.cache_dir() == Path.home() / ".cache" / "cdiqa" / "ptx"


@needs_nvcc
def test_cache_hit_and_damaged_entry(cache):
    first = ptx.ptx_from_cuda("sm_80", compiler="nvcc")
    assert not first.cached
    second = ptx.ptx_from_cuda("sm_80", compiler="nvcc")
    assert second.cached and second.ptx == first.ptx and second.cubin == first.cubin
    assert second.resources == first.resources
    (cache / f"{first.key}.json").write_text("{not json")
    assert not ptx.ptx_from_cuda("sm_80", compiler="nvcc").cached  # rebuilt


@needs_nvcc
def test_defines_change_the_key(cache):
    a = ptx.ptx_from_cuda("sm_90", compiler="nvcc", cubin=False)
    b = ptx.ptx_from_cuda("sm_90", compiler="nvcc", cubin=False,
                          defines={"CDIQA_MASKING_MIN_BLOCKS": 3})
    assert a.key != b.key and b.cubin is None


# ----------------------------------------------------------------------------- errors


@needs_nvcc
def test_compile_error_shows_the_compiler_lines(cache, tmp_path, monkeypatch):
    bad = tmp_path / "masking.cu"
    bad.write_text('extern "C" __global__ void f(float* x) { x[0] = undefined_name; }\n')
    monkeypatch.setattr(ptx, "MASKING_SOURCE", bad)
    with pytest.raises(KernelError, match=r"(?s)Compilation for file 'masking.cu'.*"
                                          r"undefined_name"):
        ptx.ptx_from_cuda("sm_90", compiler="nvcc")


def test_no_compiler_is_backend_unavailable(monkeypatch):
    monkeypatch.setattr(ptx, "find_nvcc", lambda: None)
    monkeypatch.setattr(ptx, "nvrtc_version", lambda: None)
    with pytest.raises(BackendUnavailable, match="needs nvcc .* or NVRTC"):
        ptx.ptx_from_cuda("sm_90")


def test_auto_prefers_nvrtc_when_the_driver_is_older(monkeypatch):
    monkeypatch.setattr(ptx, "find_nvcc", lambda: "/opt/cuda/bin/nvcc")
    monkeypatch.setattr(ptx, "nvcc_version", lambda _: "13.0.88")
    monkeypatch.setattr(ptx, "nvrtc_version", lambda: "12.6")
    assert ptx.choose_compiler("auto", driver_version=12060) == "nvrtc"  # JetPack 6
    assert ptx.choose_compiler("auto", driver_version=13000) == "nvcc"
    assert ptx.choose_compiler("auto") == "nvcc"
    assert ptx.choose_compiler("nvcc", driver_version=12060) == "nvcc"
    monkeypatch.setattr(ptx, "find_nvcc", lambda: None)
    assert ptx.choose_compiler("auto") == "nvrtc"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="Architecture for option 'arch'"):
        ptx.ptx_from_cuda("90")
    with pytest.raises(ConfigError, match="Compiler for option 'compiler'"):
        ptx.choose_compiler("clang")
    with pytest.raises(ConfigError, match="Macro name"):
        ptx._define_flags({"1BAD": 1})


def test_version_numbers():
    assert ptx.version_number("12.6") == 12060
    assert ptx.version_number("13.0.88") == 13000
    assert ptx.arch_from_capability(8, 7) == "sm_87"


def test_archs_match_the_spec():
    assert tuple(load_spec()["archs"]) == ptx.ARCHS
