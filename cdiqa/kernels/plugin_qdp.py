"""The masking op as a TensorRT Quickly Deployable Plugin with an ahead-of-time kernel.

``register()`` defines, through ``tensorrt.plugin`` (TensorRT 10.8+ and 11.x):

- ``@trtp.register("cdiqa::CdiqaMasking")``: inputs e, a, gamma, sigma and the int
  attribute k (name, namespace, inputs and attributes from ``spec.yaml``, the one source);
  output stats (B, 2, C) float32 from e (B, C, H, W);
- ``@trtp.autotune``: e and a both FP32 or both FP16 (linear), gamma/sigma/stats FP32;
- ``@trtp.aot_impl``: our PTX for the build GPU's architecture with its launch parameters,
  so the kernel is baked into the engine and the engine runs without Python (trtexec, C++,
  Triton).

Why a QDP-specific entry point and a single pass (``masking/plugin/masking_qdp.cu``)::

    TensorRT launches an AOT kernel as   kernel(inputs..., extra int32 args..., outputs...)
    masking_stats_f32 takes              (e, a, gamma, sigma, partials, stats, B, C, H, W, k, tpb)
    masking_qdp_f32 takes                (e, a, gamma, sigma, B, C, H, W, k, stats)

and the AOT path has one launch per plugin and no workspace, so masking.cuh's two-pass split
(segments of a plane + ``masking_reduce`` over a workspace) is not expressible. The QDP entry
runs the same device code with one block per (b, c) plane: the launcher's own choice from
1024 planes on (batch 8 x 128 channels, the measured optimum there), and slower for a few
large planes (e.g. 1 x 32 x 480 x 270: 32 blocks). The C++ IPluginV3 plugin
(``masking/plugin/cdiqaMaskingPlugin.cpp``) has the workspace and calls
``cdiqa_masking_forward``; use it where small batches of large images matter.

Importing this module imports neither tensorrt nor cuda-python.
"""

# No ``from __future__ import annotations``: tensorrt.plugin reads the decorated functions'
# annotations as objects (TensorDesc marks an input, int an attribute).
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from cdiqa.errors import BackendUnavailable, ConfigError, KernelError, describe
from cdiqa.kernels import MASKING_DIR, MASKING_HEADER, MASKING_SOURCE, load_spec

#: The AOT entry points' source (includes masking.cu).
QDP_SOURCE = MASKING_DIR / "plugin" / "masking_qdp.cu"
#: Kernel name per dtype of e and a.
QDP_ENTRY_POINTS = {"float32": "masking_qdp_f32", "float16": "masking_qdp_f16"}
#: Order of the scalar arguments between the input and output pointers.
QDP_EXTRA_ARGS = ("B", "C", "H", "W", "k")
#: Grid y/z limit: planes = grid y * grid z, as in masking.cuh.
MAX_GRID_YZ = 65535

_registered: dict[str, object] = {}


def plugin_definition() -> dict:
    """What ``register()`` registers, from ``spec.yaml``: id, name, namespace, version,
    input names, {attribute: type}, output names, threads per block."""
    spec = load_spec()
    return {"id": f"{spec['namespace']}::{spec['op']}", "name": spec["op"],
            "namespace": spec["namespace"], "version": str(spec["version"]),
            "inputs": tuple(i["name"] for i in spec["inputs"]),
            "attributes": {a["name"]: a["type"] for a in spec["attributes"]},
            "outputs": tuple(o["name"] for o in spec["outputs"]),
            "threads": int(spec["launch"]["threads"]),
            "shared_bytes": int(spec["launch"]["dynamic_shared_bytes"])}


def launch_config(B: int, C: int, H: int, W: int) -> dict[str, int]:
    """Grid and block of the AOT kernel for concrete sizes (the symbolic form is built in
    ``register``): one block per plane, planes split over grid y and z.

    >>> launch_config(8, 128, 24, 32)
    {'grid_x': 1, 'grid_y': 1024, 'grid_z': 1, 'block_x': 256, 'shared_mem': 0}
    """
    planes = B * C
    gy = min(planes, MAX_GRID_YZ)
    return {"grid_x": 1, "grid_y": gy, "grid_z": -(-planes // gy),
            "block_x": plugin_definition()["threads"], "shared_mem": 0}


# ----------------------------------------------------------------------------- PTX


def _sources() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (QDP_SOURCE, MASKING_SOURCE, MASKING_HEADER)}


@lru_cache(maxsize=8)
def qdp_ptx(arch: str, compiler: str = "auto", driver_version: int | None = None) -> str:
    """PTX of ``masking_qdp.cu`` for ``arch`` (nvcc or NVRTC, cached like cdiqa.kernels.ptx).

    Raises:
        BackendUnavailable: neither nvcc nor NVRTC is available.
        CdiqaError: the build failed (the compiler's first lines are in the message).
    """
    from cdiqa.kernels import ptx

    arch = ptx.check_arch(arch)
    which = ptx.choose_compiler(compiler, driver_version)
    if which == "nvcc":
        version, flags = f"nvcc {ptx.nvcc_version(ptx.find_nvcc())}", list(ptx.NVCC_FLAGS)
    else:
        version, flags = f"nvrtc {ptx.nvrtc_version()}", list(ptx.NVRTC_FLAGS)
    key = ptx.cache_key(_sources(), version, arch, ["qdp", *flags])
    cached = ptx.cache_dir() / f"{key}.qdp.ptx"
    if cached.is_file():
        return cached.read_text()
    text = _nvcc(arch, flags) if which == "nvcc" else _nvrtc(arch, flags)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        ptx._atomic_write(cached, text.encode())
    except OSError:
        pass  # a read-only cache only costs a rebuild
    return text


def _nvcc(arch: str, flags: list[str]) -> str:
    from cdiqa.kernels import ptx

    with tempfile.TemporaryDirectory(prefix="cdiqa-qdp-") as tmp:
        out = Path(tmp) / "masking_qdp.ptx"
        cmd = [ptx.find_nvcc(), "--ptx", f"-arch=compute_{arch[3:]}", *flags,
               f"-I{MASKING_DIR}", str(QDP_SOURCE), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise KernelError(describe("Compilation", "file", QDP_SOURCE.name,
                                      f"nvcc exit status {proc.returncode}", "0",
                                      "Fix the first errors below") + "\n" +
                             "\n".join((proc.stdout + proc.stderr).splitlines()[:15]))
        return out.read_text()


def _nvrtc(arch: str, flags: list[str]) -> str:
    from cdiqa import _lazy

    nvrtc = _lazy.lazy_import("cuda.bindings.nvrtc", purpose="Building kernels with NVRTC")
    headers = [MASKING_SOURCE.read_bytes(), MASKING_HEADER.read_bytes()]
    names = [MASKING_SOURCE.name.encode(), MASKING_HEADER.name.encode()]
    err, prog = nvrtc.nvrtcCreateProgram(QDP_SOURCE.read_bytes(), QDP_SOURCE.name.encode(),
                                         len(headers), headers, names)
    try:
        opts = [f"--gpu-architecture=compute_{arch[3:]}".encode(), *(f.encode() for f in flags)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise KernelError(describe("Compilation", "file", QDP_SOURCE.name, f"NVRTC {err}",
                                      "success", "Fix the errors below") + "\n" +
                             log.decode(errors="replace")[:2000])
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        buf = b" " * size
        nvrtc.nvrtcGetPTX(prog, buf)
        return buf.rstrip(b"\0").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def current_arch() -> tuple[str, int | None]:
    """(``sm_XY``, driver version) of the current CUDA device (TensorRT builds on it)."""
    from cdiqa import _lazy

    rt = _lazy.lazy_import("cuda.bindings.runtime", purpose="Building the TensorRT plugin")
    err, device = rt.cudaGetDevice()
    if int(err) != 0:
        raise BackendUnavailable(f"The TensorRT plugin needs an NVIDIA GPU: cudaGetDevice "
                                 f"returned {getattr(err, 'name', err)}.")
    err, props = rt.cudaGetDeviceProperties(device)
    _, driver = rt.cudaDriverGetVersion()
    return f"sm_{props.major}{props.minor}", int(driver) or None


# ----------------------------------------------------------------------------- registration


def register() -> dict:
    """Register the plugin with TensorRT's plugin registry (once per process).

    Returns:
        ``plugin_definition()``, what was registered.

    Raises:
        BackendUnavailable: tensorrt (>= 10.8, with ``tensorrt.plugin``) is not installed.
    """
    definition = plugin_definition()
    if definition["id"] in _registered:
        return definition
    from cdiqa._lazy import require_tensorrt

    trt = require_tensorrt("the masking QDP plugin")
    if not hasattr(trt, "plugin") and not _has_module("tensorrt.plugin"):
        raise BackendUnavailable(f"The masking QDP plugin needs tensorrt >= 10.8 (tensorrt.plugin)"
                                 f"; found {trt.__version__}. Upgrade 'tensorrt' or build the "
                                 "C++ plugin (cdiqa/kernels/masking/plugin/README.md).")
    import importlib

    trtp = importlib.import_module("tensorrt.plugin")
    if set(definition["attributes"]) != {"k"} or definition["inputs"] != ("e", "a", "gamma",
                                                                          "sigma"):
        raise ConfigError(describe("Contract", "kernel spec", definition["name"],
                                   (definition["inputs"], definition["attributes"]),
                                   "inputs (e, a, gamma, sigma) and the int attribute k",
                                   "Update cdiqa/kernels/plugin_qdp.py with the spec"))
    _define(trt, trtp, definition)
    _registered[definition["id"]] = definition
    return definition


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _define(trt, trtp, d: dict) -> None:
    """The three decorated functions. Their parameter names are the spec's input and
    attribute names (``tensorrt.plugin`` reads the signature), checked in ``register``."""
    plugin_id = d["id"]

    @trtp.register(plugin_id)
    def masking_desc(e: trtp.TensorDesc, a: trtp.TensorDesc, gamma: trtp.TensorDesc,
                     sigma: trtp.TensorDesc, k: int) -> trtp.TensorDesc:
        shape = e.shape_expr
        return trtp.from_shape_expr((shape[0], 2, shape[1]), dtype=trt.float32)

    @trtp.autotune(plugin_id)
    def masking_autotune(e: trtp.TensorDesc, a: trtp.TensorDesc, gamma: trtp.TensorDesc,
                         sigma: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
                         ) -> list[trtp.AutoTuneCombination]:
        # e and a share one type; gamma, sigma and stats are always FP32; linear layout
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32, FP32, FP32", "LINEAR")]

    @trtp.aot_impl(plugin_id)
    def masking_aot(e: trtp.TensorDesc, a: trtp.TensorDesc, gamma: trtp.TensorDesc,
                    sigma: trtp.TensorDesc, k: int, outputs: tuple[trtp.TensorDesc],
                    tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams,
                                          trtp.SymIntExprs]:
        dtype = "float16" if e.dtype == trt.float16 else "float32"
        arch, driver = current_arch()
        text = qdp_ptx(arch, driver_version=driver)
        B, C, H, W = e.shape_expr
        planes = B * C
        params = trtp.KernelLaunchParams()
        params.grid_x = 1
        params.grid_y = trtp.min(planes, MAX_GRID_YZ)
        params.grid_z = trtp.cdiv(planes, trtp.min(planes, MAX_GRID_YZ))
        params.block_x = d["threads"]
        params.shared_mem = d["shared_bytes"]
        extra = trtp.SymIntExprs.from_tuple(
            [trtp.SymInt32(x) for x in (B, C, H, W, int(k))])
        return QDP_ENTRY_POINTS[dtype], text, params, extra


def registered() -> bool:
    """Whether ``register()`` ran in this process."""
    return bool(_registered)


__all__ = ["QDP_ENTRY_POINTS", "QDP_EXTRA_ARGS", "QDP_SOURCE", "current_arch", "launch_config",
           "plugin_definition", "qdp_ptx", "register", "registered"]
