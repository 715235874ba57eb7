"""The GPU a TensorRT build or session runs on, through cuda-python's runtime API.

Shared by the engine builder (``cdiqa.export.engine``) and the TensorRT backend; nothing here
imports cuda-python until a function is called.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError, KernelError, describe


def cudart():
    """cuda-python's runtime API bindings (cuda.bindings.runtime)."""
    return _lazy.lazy_import("cuda.bindings.runtime", purpose="The TensorRT backend")


def cuda_call(result, call: str):
    """Unpack a cuda-python runtime result; ``KernelError`` naming the call on an error code."""
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        raise KernelError(f"CUDA call {call} failed: {getattr(err, 'name', int(err))}.")
    return values[0] if len(values) == 1 else (values or None)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU a session or build runs on."""

    index: int
    name: str
    compute_capability: str
    driver_version: int
    runtime_version: int

    @property
    def arch(self) -> str:
        """``sm_XY``."""
        return "sm_" + self.compute_capability.replace(".", "")


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (cuda-python runtime API).

    Raises:
        BackendUnavailable: no cuda-python, no driver or no GPU (the message says which).
    """
    rt = cudart()
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # the bindings raise when libcudart / libcuda cannot load
        raise BackendUnavailable(f"TensorRT needs an NVIDIA GPU: CUDA could not start ({exc})."
                                 ) from None
    if int(err) != 0 or count == 0:
        why = getattr(err, "name", str(err)) if int(err) != 0 else "the driver sees no GPU"
        raise BackendUnavailable(f"TensorRT needs an NVIDIA GPU and driver: {why}. Use "
                                 "backend='onnxruntime' on this machine.")
    if not 0 <= device < count:
        raise ConfigError(describe("Device", "backend", "tensorrt", f"cuda:{device}",
                                   f"an ordinal in [0, {count - 1}]", "Pick a present GPU"))
    props = cuda_call(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    driver = cuda_call(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    runtime = cuda_call(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return GpuInfo(device, name.rstrip("\0"), f"{props.major}.{props.minor}", int(driver),
                   int(runtime))


__all__ = ["GpuInfo", "cuda_call", "cudart", "gpu_info"]
