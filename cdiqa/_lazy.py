"""Lazy, optional imports of heavy dependencies.

Nothing here imports a heavy package at import time; each helper imports on first call and
turns a missing package into ``BackendUnavailable`` naming the pip extra. Nothing is ever
installed at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from types import ModuleType

from cdiqa.errors import BackendUnavailable

# module -> the extra of cdiqa that provides it
_EXTRAS = {
    "torch": "train",
    "skimage": "train",
    "pydicom": "train",
    "pydicom_data": "train",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "runtime",
    "onnxruntime.quantization": "export",
    "tensorrt": "trt",
    "tensorrt.plugin": "trt",
    "cuda.bindings.driver": "cuda",
    "cuda.bindings.runtime": "cuda",
    "cuda.bindings.nvrtc": "cuda",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "multipart": "serve",
    "tritonclient.http": "triton",
    "tritonclient.grpc": "triton",
    "matplotlib": "plots",
    "av": "video",
}


def lazy_import(name: str, *, purpose: str | None = None) -> ModuleType:
    """Import ``name`` now, or raise ``BackendUnavailable`` that says what to install.

    Args:
        name: dotted module name, e.g. ``"onnxruntime"``.
        purpose: what needs it, for the message (e.g. ``"TensorRT backend"``).
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise missing(name, exc, purpose=purpose) from None


def extra_of(name: str) -> str | None:
    """The extra of cdiqa that provides module ``name``; None: not an optional dependency."""
    return _EXTRAS.get(name, _EXTRAS.get(name.split(".")[0]))


def missing(name: str, reason: object, *, purpose: str | None = None,
            extra: str | None = None) -> BackendUnavailable:
    """The one-line error for optional module ``name`` that failed to import for ``reason``:
    what needs it and what to install (``extra``, default: the module's own extra)."""
    root = name.split(".")[0]
    extra = extra or extra_of(name)
    hint = f"; install 'cdiqa[{extra}]'" if extra else f"; install '{root}'"
    return BackendUnavailable(f"{purpose or 'This feature'} needs '{root}' ({reason}){hint}.")


@lru_cache(maxsize=None)
def available(name: str) -> bool:
    """Whether ``name`` can be imported, computed once and without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def torch() -> ModuleType:
    """The torch module (training, export)."""
    return lazy_import("torch", purpose="Training and export")


def onnx() -> ModuleType:
    """The onnx module."""
    return lazy_import("onnx", purpose="ONNX export")


def onnxruntime() -> ModuleType:
    """The onnxruntime module."""
    return lazy_import("onnxruntime", purpose="ONNX Runtime backend")


_TRT_MISSING = ("TensorRT is not installed: {purpose} needs the 'tensorrt' Python package and "
                "its libraries ({reason}); install 'cdiqa[trt]' on a machine with an NVIDIA GPU.")


def require_tensorrt(purpose: str = "the TensorRT backend") -> ModuleType:
    """The tensorrt module, or ``BackendUnavailable`` with one line saying what to install."""
    try:
        return lazy_import("tensorrt", purpose=purpose)
    except (BackendUnavailable, OSError) as exc:  # OSError: the wheel without its libraries
        text = str(exc).strip()
        reason = text[text.find("(") + 1:text.rfind(")")] if "(" in text else text
        raise BackendUnavailable(_TRT_MISSING.format(purpose=purpose, reason=reason or
                                                     type(exc).__name__)) from None


def cuda_driver() -> ModuleType:
    """cuda-python's driver API bindings (cuda.bindings.driver)."""
    return lazy_import("cuda.bindings.driver", purpose="CUDA kernels")
