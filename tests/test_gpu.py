"""cdiqa.gpu: the GPU probe refuses clearly without a GPU; a failed CUDA call is a KernelError
naming it. Needs cuda-python (skipped without it), never a fake of it."""

from __future__ import annotations

import pytest

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, KernelError
from cdiqa.gpu import cuda_call, gpu_info


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


def test_a_failed_cuda_call_is_a_kernel_error() -> None:
    rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    with pytest.raises(KernelError, match=r"CUDA call cudaMalloc failed: cudaErrorNoDevice"):
        cuda_call((rt.cudaError_t.cudaErrorNoDevice, 0), "cudaMalloc")
    assert cuda_call((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cuda_call((rt.cudaError_t.cudaSuccess, 1, 2), "x") == (1, 2)
