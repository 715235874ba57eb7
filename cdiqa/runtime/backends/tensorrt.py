"""TensorRT backend: runs an engine built by ``iqa-export build`` on an NVIDIA GPU.

The engine file (header + plan) is ``cdiqa.engine_format``; the graph an engine must have
been built from is ``cdiqa.manifest.select_graph`` (plugin form).

A session binds device buffers through cuda-python (``cuda.bindings.runtime``), copies the
feed through pinned host buffers on its own stream and runs ``execute_async_v3``; with
``cuda_graph=True`` each fixed input shape is captured once as a CUDA graph and replayed.
One execution context serves every thread, behind a lock.

Nothing here imports tensorrt or cuda-python until a session is opened.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cdiqa._lazy import require_tensorrt
from cdiqa.engine_format import check_engine_header, engine_key, plugin_hash, read_engine_header
from cdiqa.errors import BackendUnavailable, ConfigError, KernelError, ManifestError, describe
from cdiqa.gpu import cuda_call, cudart, gpu_info
from cdiqa.manifest import Manifest, select_graph
from cdiqa.runtime.backends.base import Session, SessionOptions

#: Environment variable naming a C++ plugin library (libcdiqa_masking_plugin.so) to load
#: before deserializing (engines built with the QDP plugin need none: the kernel is inside).
PLUGIN_LIBRARY_ENV = "CDIQA_TRT_PLUGIN_LIBRARY"


def _device_index(device: str | None) -> int:
    kind, _, index = (device or "cuda").partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(describe("Device", "backend", "tensorrt", repr(device),
                                   "'cuda' or 'cuda:N'", "TensorRT runs on NVIDIA GPUs only; "
                                   "use backend='onnxruntime' for the CPU"))
    return int(index or 0)


# ----------------------------------------------------------------------------- engines


def find_engine(manifest: Manifest, domain: str, precision: str, arch: str) -> Path:
    """Path of the bundle's engine for (domain, precision, GPU arch).

    Raises:
        BackendUnavailable: none was built; the message gives the build command.
    """
    engines = getattr(manifest, "engines", {}) or {}
    key = engine_key(domain, precision, arch)
    if key not in engines:
        raise BackendUnavailable(describe(
            "TensorRT engine", "bundle", manifest.root, f"none for {key}",
            f"one of {sorted(engines)}" if engines else "an engine built on this GPU",
            f"Build it: `iqa-export build {manifest.root} --precision {precision} "
            f"--domain {domain}`"))
    return manifest.root / engines[key].path


class TensorRTBackend:
    """Creates ``TensorRTSession`` objects."""

    name = "tensorrt"

    def load(self, manifest: Manifest, *, device: str | None = None,
             options: SessionOptions | None = None, cuda_graph: bool = False
             ) -> "TensorRTSession":
        """Open the bundle's engine for ``options.domain``/``precision`` on ``device``."""
        return TensorRTSession(manifest, device or "cuda", options or SessionOptions(),
                               cuda_graph=cuda_graph)


class TensorRTSession(Session):
    """A deserialized engine, one execution context, a stream and pinned buffers."""

    def __init__(self, manifest: Manifest, device: str, options: SessionOptions, *,
                 cuda_graph: bool = False) -> None:
        index = _device_index(device)
        super().__init__(manifest, f"cuda:{index}")
        trt = require_tensorrt("the TensorRT backend")
        gpu = gpu_info(index)
        domain = options.domain or manifest.default_domain
        path = find_engine(manifest, domain, options.precision, gpu.arch)
        data = path.read_bytes()
        header, offset = read_engine_header(data, path.name)
        check_engine_header(header, trt_version=trt.__version__, gpu_name=gpu.name,
                            compute_capability=gpu.compute_capability,
                            plugin_hash=plugin_hash(manifest.plugin),
                            onnx_sha256=select_graph(manifest, domain, options.precision,
                                                     "plugin", fp16_flag=True).sha256,
                            name=path.name)
        self._rt = rt = cudart()
        cuda_call(rt.cudaSetDevice(index), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        library = os.environ.get(PLUGIN_LIBRARY_ENV)
        if library:
            trt.get_plugin_registry().load_library(library)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data[offset:])
        if self._engine is None:
            raise ManifestError(describe("Deserialization", "engine", path.name, "None",
                                         "a TensorRT engine", "Rebuild it with `iqa-export build`"))
        self._context = self._engine.create_execution_context()
        self._stream = cuda_call(rt.cudaStreamCreate(), "cudaStreamCreate")
        self._device: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self._host: dict[str, tuple[int, int]] = {}
        self._graphs: dict[tuple, Any] = {}
        self._cuda_graph = cuda_graph
        self._lock = threading.Lock()
        self.header = header

    # -- buffers -----------------------------------------------------------------------------

    def _buffer(self, table: dict, name: str, nbytes: int, pinned: bool) -> int:
        ptr, size = table.get(name, (0, 0))
        if size >= nbytes:
            return ptr
        rt = self._rt
        if ptr:
            cuda_call(rt.cudaFreeHost(ptr) if pinned else rt.cudaFree(ptr), "cudaFree")
        alloc = rt.cudaMallocHost if pinned else rt.cudaMalloc
        ptr = int(cuda_call(alloc(max(nbytes, 256)), "cudaMallocHost" if pinned else "cudaMalloc"))
        table[name] = (ptr, max(nbytes, 256))
        if not pinned:
            self._graphs.clear()  # captured graphs hold the old device addresses
        return ptr

    def _host_array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._buffer(self._host, name, nbytes, pinned=True)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    # -- inference ---------------------------------------------------------------------------

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._run(feed)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt, ctx, stream = self._rt, self._context, self._stream
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in feed.items():
            ctx.set_input_shape(name, array.shape)
            host = self._host_array(name, array.shape, array.dtype)
            host[...] = array
            dev = self._buffer(self._device, name, array.nbytes, pinned=False)
            cuda_call(rt.cudaMemcpyAsync(dev, host.ctypes.data, array.nbytes, h2d, stream),
                "cudaMemcpyAsync")
            ctx.set_tensor_address(name, dev)
        outputs = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            outputs[name] = self._host_array(name, shape, np.float32)
            ctx.set_tensor_address(name, self._buffer(self._device, name,
                                                      outputs[name].nbytes, pinned=False))
        self._execute(tuple((n, a.shape) for n, a in sorted(feed.items())))
        for name, host in outputs.items():
            cuda_call(rt.cudaMemcpyAsync(host.ctypes.data, self._device[name][0], host.nbytes, d2h,
                                   stream), "cudaMemcpyAsync")
        cuda_call(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: host.copy() for name, host in outputs.items()}

    def _execute(self, shapes: tuple) -> None:
        """Run the context on the stream; for a fixed shape, replay its captured CUDA graph."""
        rt, stream = self._rt, self._stream
        if not self._cuda_graph:
            if not self._context.execute_async_v3(int(stream)):
                raise KernelError("TensorRT execute_async_v3 failed; see the TensorRT log above.")
            return
        graph_exec = self._graphs.get(shapes)
        if graph_exec is None:
            # one plain run first: TensorRT does its shape-dependent setup outside the capture
            self._context.execute_async_v3(int(stream))
            mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            cuda_call(rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
            self._context.execute_async_v3(int(stream))
            graph = cuda_call(rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
            self._graphs[shapes] = graph_exec
        cuda_call(rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def close(self) -> None:
        """Free the buffers, graphs, stream, context and engine (idempotent)."""
        rt = getattr(self, "_rt", None)
        if rt is None:
            return
        for graph_exec in self._graphs.values():
            rt.cudaGraphExecDestroy(graph_exec)
        for ptr, _ in self._device.values():
            rt.cudaFree(ptr)
        for ptr, _ in self._host.values():
            rt.cudaFreeHost(ptr)
        if self._stream is not None:
            rt.cudaStreamDestroy(self._stream)
        self._graphs, self._device, self._host, self._stream = {}, {}, {}, None
        self._context = self._engine = self._runtime = None
        self._rt = None


__all__ = ["PLUGIN_LIBRARY_ENV", "TensorRTBackend", "TensorRTSession", "find_engine"]
