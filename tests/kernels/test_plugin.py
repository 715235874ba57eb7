"""The TensorRT plugin definitions agree with each other and with the graph.

One contract, four places: ``spec.yaml``, the QDP registration (``cdiqa.kernels.plugin_qdp``),
the C++ IPluginV3 plugin's constants (``masking/plugin/cdiqaMaskingPlugin.{h,cpp}``, parsed
as text) and the nodes of an exported ``model.plugin.onnx``. Also: the QDP AOT kernel's
parameter order is TensorRT's (inputs, extra int32 args, outputs), its launch matches the
kernel's one-block-per-plane configuration, and the C++ plugin compiles (its CUDA part with
nvcc here; the .cpp only where TensorRT's headers exist, else skipped with the reason).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cdiqa.errors import BackendUnavailable
from cdiqa.kernels import MASKING_DIR, load_spec
from cdiqa.kernels import loader, plugin_qdp

PLUGIN_DIR = MASKING_DIR / "plugin"
HEADER = (PLUGIN_DIR / "cdiqaMaskingPlugin.h").read_text()
SOURCE = (PLUGIN_DIR / "cdiqaMaskingPlugin.cpp").read_text()


def _cpp_constant(name: str) -> str:
    m = re.search(rf'constexpr\s+char\s+const\s*\*\s*{name}\s*=\s*"([^"]*)"', HEADER)
    assert m, f"{name} not found in cdiqaMaskingPlugin.h"
    return m.group(1)


def _cpp_int(name: str) -> int:
    m = re.search(rf"constexpr\s+int32_t\s+{name}\s*=\s*(\d+)", HEADER)
    assert m, f"{name} not found in cdiqaMaskingPlugin.h"
    return int(m.group(1))


@pytest.fixture(scope="module")
def spec() -> dict:
    return load_spec()


def test_qdp_definition_is_the_spec(spec: dict) -> None:
    d = plugin_qdp.plugin_definition()
    assert d["id"] == f"{spec['namespace']}::{spec['op']}"
    assert (d["name"], d["namespace"], d["version"]) == (spec["op"], spec["namespace"],
                                                         str(spec["version"]))
    assert d["inputs"] == tuple(i["name"] for i in spec["inputs"])
    assert d["attributes"] == {a["name"]: a["type"] for a in spec["attributes"]}
    assert d["outputs"] == ("stats",)
    assert d["threads"] == spec["launch"]["threads"] == loader.THREADS


def test_cpp_constants_are_the_spec(spec: dict) -> None:
    assert _cpp_constant("kMaskingPluginName") == spec["op"]
    assert _cpp_constant("kMaskingPluginNamespace") == spec["namespace"]
    assert _cpp_constant("kMaskingPluginVersion") == str(spec["version"])
    assert _cpp_int("kMaskingNbInputs") == len(spec["inputs"])
    assert _cpp_int("kMaskingNbOutputs") == len(spec["outputs"])
    # the one attribute, an INT32 field, in both the creator's field names and the plugin's
    assert [a["name"] for a in spec["attributes"]] == [_cpp_constant("kMaskingAttributeWindow")]
    fields = re.findall(r"emplace_back\(kMaskingAttributeWindow,[^;]*PluginFieldType::(\w+)",
                        SOURCE)
    assert fields == ["kINT32", "kINT32"]
    # enqueue calls the host launcher and sizes its workspace with the spec's function
    assert spec["host_api"]["launcher"] + "(" in SOURCE
    assert spec["host_api"]["workspace_size"] + "(" in SOURCE


@pytest.fixture(scope="module")
def plugin_graph(tiny_bundle):
    pytest.importorskip("onnx", reason="reading model.plugin.onnx needs onnx")
    from cdiqa.manifest import FILE_ONNX_PLUGIN, load_manifest

    manifest = load_manifest(tiny_bundle)
    import onnx

    return manifest, onnx.load(str(manifest.path(FILE_ONNX_PLUGIN)))


def test_plugin_onnx_nodes_agree_with_every_definition(spec: dict, plugin_graph) -> None:
    import onnx

    manifest, model = plugin_graph
    qdp = plugin_qdp.plugin_definition()
    nodes = [n for n in model.graph.node if n.op_type == spec["op"]]
    assert len(nodes) == manifest.plugin.count > 0
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # what onnx-tensorrt's fallback importer looks the creator up by
        assert node.op_type == qdp["name"] == _cpp_constant("kMaskingPluginName")
        assert attrs["plugin_namespace"].decode() == qdp["namespace"] == \
            _cpp_constant("kMaskingPluginNamespace") == manifest.plugin.namespace
        assert attrs["plugin_version"].decode() == qdp["version"] == \
            _cpp_constant("kMaskingPluginVersion") == manifest.plugin.version
        # the op's attributes: exactly the spec's, with the types TensorRT expects (INT)
        op_attrs = {k: v for k, v in attrs.items()
                    if k not in ("plugin_namespace", "plugin_version")}
        assert set(op_attrs) == set(qdp["attributes"]) == set(manifest.plugin.attributes)
        assert all(isinstance(v, int) for v in op_attrs.values())
        assert op_attrs == manifest.plugin.attributes
        assert len(node.input) == len(qdp["inputs"]) and len(node.output) == 1


# ----------------------------------------------------------------------------- QDP AOT kernel


def _params(ptx: str, entry: str) -> list[str]:
    m = re.search(rf"\.entry\s+{entry}\s*\((.*?)\)", ptx, re.S)
    assert m, f"{entry} not in the PTX"
    return re.findall(r"\.param\s+\.(\w+)", m.group(1))


@pytest.fixture(scope="module")
def qdp_ptx(tmp_path_factory) -> str:
    from cdiqa.kernels import ptx

    try:
        ptx.choose_compiler("auto")
    except BackendUnavailable as exc:
        pytest.skip(f"no CUDA compiler here: {exc}")
    old = os.environ.get("CDIQA_CACHE")
    os.environ["CDIQA_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return plugin_qdp.qdp_ptx("sm_87")
    finally:
        os.environ.pop("CDIQA_CACHE") if old is None else os.environ.update(CDIQA_CACHE=old)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_qdp_kernel_takes_inputs_then_extra_args_then_outputs(qdp_ptx: str, dtype: str) -> None:
    # TensorRT launches an AOT plugin kernel as (inputs..., extra int32 args..., outputs...)
    params = _params(qdp_ptx, plugin_qdp.QDP_ENTRY_POINTS[dtype])
    n_in = len(plugin_qdp.plugin_definition()["inputs"])
    n_extra = len(plugin_qdp.QDP_EXTRA_ARGS)
    assert params == ["u64"] * n_in + ["u32"] * n_extra + ["u64"]
    assert plugin_qdp.QDP_EXTRA_ARGS == ("B", "C", "H", "W", "k")


@pytest.mark.parametrize("shape", [(8, 128, 24, 32), (1, 32, 120, 68), (70000, 1, 64, 64)])
def test_qdp_launch_is_the_single_pass_configuration(shape) -> None:
    B, C, H, W = shape
    cfg = plugin_qdp.launch_config(B, C, H, W)
    one_block_per_plane = loader.tiles_per_plane(H, W)
    assert (cfg["grid_x"], cfg["grid_y"], cfg["grid_z"]) == \
        loader.stats_grid(B, C, H, W, one_block_per_plane)
    assert loader.workspace_size(B, C, H, W, one_block_per_plane) == 0
    assert cfg["block_x"] == loader.THREADS and cfg["shared_mem"] == 0


def test_register_without_tensorrt_says_what_to_install() -> None:
    from cdiqa import _lazy

    if _lazy.available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed: the masking QDP "
                                                 r"plugin needs .*install 'cdiqa\[trt\]'"):
        plugin_qdp.register()
    assert not plugin_qdp.registered()


@pytest.mark.trt
@pytest.mark.gpu
def test_qdp_registers_with_tensorrt() -> None:
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT (cdiqa[trt])")
    pytest.importorskip("tensorrt.plugin", reason="needs TensorRT >= 10.8 (tensorrt.plugin)")
    d = plugin_qdp.register()
    creator = trt.get_plugin_registry().get_creator(d["name"], d["version"], d["namespace"])
    assert creator is not None


# ----------------------------------------------------------------------------- C++ plugin


def _tensorrt_include() -> Path | None:
    roots = [os.environ.get("TensorRT_ROOT"), "/usr/local/TensorRT", "/usr"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / sub / "NvInferRuntime.h").is_file():
                return Path(root) / sub
    return None


def _nvcc() -> str:
    from cdiqa.kernels.ptx import find_nvcc

    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    return nvcc


def test_plugin_cuda_part_compiles(tmp_path: Path) -> None:
    """masking.cu with its host launcher, as CMakeLists.txt compiles it into the library."""
    nvcc = _nvcc()
    out = tmp_path / "masking.o"
    cmd = [nvcc, "-c", "-std=c++17", "-O3", "-Werror", "all-warnings", "-Xcompiler", "-fPIC",
           "-arch=sm_87", f"-I{MASKING_DIR}", str(MASKING_DIR / "masking.cu"), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    nm = shutil.which("nm")
    if nm:
        symbols = subprocess.run([nm, "-g", "--defined-only", str(out)], capture_output=True,
                                 text=True).stdout
        for name in load_spec()["host_api"].values():
            if isinstance(name, str):
                assert name in symbols


@pytest.mark.trt
@pytest.mark.parametrize("registration", ["getCreators", "static"])
def test_cpp_plugin_compiles_against_tensorrt_headers(registration: str) -> None:
    include = _tensorrt_include()
    if include is None:
        pytest.skip("TensorRT headers (NvInferRuntime.h) not found in $TensorRT_ROOT, "
                    "/usr/local/TensorRT or /usr: the pip wheels ship no headers; install "
                    "TensorRT's dev package or tarball and set TensorRT_ROOT")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include",
                  Path(_nvcc()).resolve().parents[1] / "include", Path("/usr/local/cuda/include")]
    cuda_include = next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)
    if cuda_include is None:
        pytest.skip("CUDA headers (cuda_runtime_api.h) not found")
    flags = ["-DCDIQA_MASKING_STATIC_REGISTRATION"] if registration == "static" else []
    cmd = [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", *flags,
           "-isystem", str(include), "-isystem", str(cuda_include), f"-I{MASKING_DIR}",
           str(PLUGIN_DIR / "cdiqaMaskingPlugin.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
