"""TensorRT backend: runs an engine built by ``iqa-export build`` on an NVIDIA GPU.

An engine file is our own small header followed by TensorRT's serialized engine::

    b"CDIQATRT" | uint32 little-endian n | n bytes of UTF-8 JSON | TensorRT plan
      magic       header length            EngineHeader             deserialize_cuda_engine

The header records what the plan is only valid for: TensorRT version, GPU name and compute
capability, the masking plugin's hash (:func:`plugin_hash`), the ONNX graph's sha256,
precision, domain and optimization profile. :func:`check_engine_header` (a pure function)
refuses a plan built for another TensorRT, GPU or plugin with the command that rebuilds it:
TensorRT itself would either fail to deserialize with an opaque message or, worse, load a
plan tuned for another GPU.

A session binds device buffers through cuda-python (``cuda.bindings.runtime``), copies the
feed through pinned host buffers on its own stream and runs ``execute_async_v3``; with
``cuda_graph=True`` each fixed input shape is captured once as a CUDA graph and replayed.
One execution context serves every thread, behind a lock.

Nothing here imports tensorrt or cuda-python until a session is opened.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import threading
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, CdiqaError, ConfigError, ManifestError, describe
from cdiqa.manifest import FILE_ONNX_PLUGIN, Manifest, PluginSpec
from cdiqa.runtime.backends.base import Session, SessionOptions

#: First bytes of every cdiqa engine file.
ENGINE_MAGIC = b"CDIQATRT"
#: Version of the header's JSON layout.
HEADER_FORMAT = 1
_LENGTH = struct.Struct("<I")
#: Kernel and plugin sources whose bytes make up the plugin hash (package data of cdiqa).
PLUGIN_SOURCES = ("kernels/masking/masking.cu", "kernels/masking/masking.cuh",
                  "kernels/masking/spec.yaml", "kernels/masking/plugin/masking_qdp.cu",
                  "kernels/masking/plugin/cdiqaMaskingPlugin.h",
                  "kernels/masking/plugin/cdiqaMaskingPlugin.cpp")
#: Environment variable naming a C++ plugin library (libcdiqa_masking_plugin.so) to load
#: before deserializing (engines built with the QDP plugin need none: the kernel is inside).
PLUGIN_LIBRARY_ENV = "CDIQA_TRT_PLUGIN_LIBRARY"
_TRT_MISSING = ("TensorRT is not installed: {purpose} needs the 'tensorrt' Python package and "
                "its libraries ({reason}); install 'cdiqa[trt]' on a machine with an NVIDIA GPU.")


@dataclass(frozen=True)
class EngineHeader:
    """What an engine was built from and for (the JSON of the header)."""

    trt_version: str
    gpu_name: str
    compute_capability: str
    plugin_hash: str
    onnx_sha256: str
    precision: str
    domain: str
    profile: dict[str, list[list[int]]] = field(default_factory=dict)
    version_compatible: bool = False
    hardware_compatible: bool = False
    cache_key: str = ""
    format: int = HEADER_FORMAT


# ----------------------------------------------------------------------------- header


def pack_engine(header: EngineHeader, plan: bytes) -> bytes:
    """The bytes of an engine file: magic, JSON length, header JSON, TensorRT plan."""
    text = json.dumps(asdict(header), sort_keys=True).encode()
    return ENGINE_MAGIC + _LENGTH.pack(len(text)) + text + bytes(plan)


def read_engine_header(data: bytes, name: str = "engine") -> tuple[EngineHeader, int]:
    """(header, offset of the TensorRT plan) of an engine file's bytes.

    Raises:
        ManifestError: not a cdiqa engine, a truncated or invalid header, or another format.
    """
    fix = "Rebuild it with `iqa-export build BUNDLE --precision ...`"
    start = len(ENGINE_MAGIC) + _LENGTH.size
    if len(data) < start or not data.startswith(ENGINE_MAGIC):
        raise ManifestError(describe("Header", "engine", name, repr(bytes(data[:8])),
                                     f"the magic {ENGINE_MAGIC!r} of a cdiqa engine", fix))
    (n,) = _LENGTH.unpack_from(data, len(ENGINE_MAGIC))
    if start + n > len(data):
        raise ManifestError(describe("Header length", "engine", name, n,
                                     f"at most {len(data) - start} bytes", fix))
    try:
        raw = json.loads(bytes(data[start:start + n]).decode())
        if raw.get("format") != HEADER_FORMAT:
            raise ManifestError(describe("Header format", "engine", name, raw.get("format"),
                                         HEADER_FORMAT, fix))
        header = EngineHeader(**raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ManifestError(describe("Header", "engine", name, str(exc).splitlines()[0],
                                     "the JSON of an EngineHeader", fix)) from None
    return header, start + n


def check_engine_header(header: EngineHeader, *, trt_version: str, gpu_name: str,
                        compute_capability: str, plugin_hash: str,
                        onnx_sha256: str | None = None, name: str = "engine") -> None:
    """Refuse an engine built for another TensorRT, GPU, plugin or graph (a pure function).

    ``onnx_sha256``: the sha256 of the graph that serves the engine's domain and precision
    now (``select_graph``); a recalibrated domain makes an older engine stale.

    A version-compatible engine only needs the same TensorRT major version; a
    hardware-compatible one (Ampere and newer) any GPU of compute capability >= 8.0.

    Raises:
        ManifestError: naming the mismatch and the command that rebuilds the engine here.
    """
    rebuild = (f"Rebuild it on this machine: `iqa-export build BUNDLE --precision "
               f"{header.precision} --domain {header.domain}`")
    same_trt = (header.trt_version.split(".")[0] == trt_version.split(".")[0]
                if header.version_compatible else header.trt_version == trt_version)
    if not same_trt:
        raise ManifestError(describe("TensorRT version", "engine", name,
                                     f"{header.trt_version} (built with)",
                                     f"{trt_version} (installed)", rebuild))
    if header.hardware_compatible:
        if _cc(compute_capability) < (8, 0):
            raise ManifestError(describe("Compute capability", "engine", name,
                                         f"{compute_capability} ({gpu_name})",
                                         ">= 8.0 for a hardware-compatible engine", rebuild))
    elif (header.gpu_name, header.compute_capability) != (gpu_name, compute_capability):
        raise ManifestError(describe("GPU", "engine", name,
                                     f"{header.gpu_name} (sm {header.compute_capability}, "
                                     "built on)", f"{gpu_name} (sm {compute_capability}, "
                                     "this machine)", rebuild))
    if header.plugin_hash != plugin_hash:
        raise ManifestError(describe("Plugin hash", "engine", name, header.plugin_hash[:16],
                                     f"{plugin_hash[:16]} (this cdiqa's masking plugin)", rebuild))
    if onnx_sha256 is not None and header.onnx_sha256 != onnx_sha256:
        raise ManifestError(describe("ONNX graph", "engine", name,
                                     f"built from {header.onnx_sha256[:16]}",
                                     f"{onnx_sha256[:16]} (the bundle's graph now)", rebuild))


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def plugin_hash(plugin: PluginSpec) -> str:
    """sha256 of the masking plugin: its contract in the manifest and its source files.

    The sources are read as cdiqa's package data (no import of cdiqa.kernels), so the
    builder and the runtime compute the same value.
    """
    h = hashlib.sha256()
    contract = {"name": plugin.name, "namespace": plugin.namespace, "version": plugin.version,
                "inputs": list(plugin.inputs), "attributes": dict(plugin.attributes)}
    h.update(json.dumps(contract, sort_keys=True).encode())
    root = resources.files("cdiqa")
    for rel in PLUGIN_SOURCES:
        item = root.joinpath(rel)
        h.update(rel.encode() + b"\0")
        h.update(item.read_bytes() if item.is_file() else b"<missing>")
    return h.hexdigest()


# ----------------------------------------------------------------------------- libraries


def require_tensorrt(purpose: str = "the TensorRT backend"):
    """The tensorrt module, or ``BackendUnavailable`` with one line saying what to install."""
    try:
        return _lazy.lazy_import("tensorrt", purpose=purpose)
    except (BackendUnavailable, OSError) as exc:  # OSError: the wheel without its libraries
        text = str(exc).strip()
        reason = text[text.find("(") + 1:text.rfind(")")] if "(" in text else text
        raise BackendUnavailable(_TRT_MISSING.format(purpose=purpose, reason=reason or
                                                     type(exc).__name__)) from None


def _cudart():
    return _lazy.lazy_import("cuda.bindings.runtime", purpose="The TensorRT backend")


def _ok(result, call: str):
    """Unpack a cuda-python runtime result, raising on an error code."""
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        raise CdiqaError(f"CUDA call {call} failed: {getattr(err, 'name', int(err))}.")
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
    rt = _cudart()
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
    props = _ok(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    driver = _ok(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    runtime = _ok(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return GpuInfo(device, name.rstrip("\0"), f"{props.major}.{props.minor}", int(driver),
                   int(runtime))


def _device_index(device: str | None) -> int:
    kind, _, index = (device or "cuda").partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(describe("Device", "backend", "tensorrt", repr(device),
                                   "'cuda' or 'cuda:N'", "TensorRT runs on NVIDIA GPUs only; "
                                   "use backend='onnxruntime' for the CPU"))
    return int(index or 0)


# ----------------------------------------------------------------------------- engines


def engine_key(domain: str, precision: str, arch: str) -> str:
    """Key of ``Manifest.engines`` for one built engine: ``"natural/fp16/sm_90"``."""
    return f"{domain}/{precision}/{arch}"


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


@dataclass(frozen=True)
class GraphChoice:
    """The ONNX graph an engine is built from, and whether FP16 is a builder flag."""

    path: Path
    sha256: str
    strongly_typed: bool
    uses_plugin: bool


def select_graph(manifest: Manifest, domain: str | None, precision: str, *,
                 trt_has_fp16_flag: bool) -> GraphChoice:
    """Which of the bundle's graphs serves (domain, precision) for TensorRT (pure; the builder
    uses it to pick the graph, a session to check that its engine was built from it).

    Raises:
        ManifestError: no such domain, or an INT8 (or, on TensorRT 11, FP16) graph that
            ``iqa-export calibrate`` has not written yet.
    """
    domain = domain or manifest.default_domain
    manifest.domain_path(domain)  # unknown domain: the manifest's message
    files = manifest.domain_models[domain].files if domain in manifest.domain_models else {}
    if precision == "fp32" or (precision == "fp16" and "fp16" not in files):
        entry = files.get("fp32_plugin", manifest.files.get(FILE_ONNX_PLUGIN))
        if entry is None:
            raise ManifestError(describe("File", "bundle", manifest.root, "no model.plugin.onnx",
                                         "the plugin form", "Re-export with `iqa-export export`"))
        if precision == "fp16" and not trt_has_fp16_flag:
            raise ManifestError(describe(
                "Precision", "domain", domain, "'fp16' without an FP16 graph",
                "domains/<domain>/model.fp16.onnx (TensorRT 11 builds only strongly typed)",
                f"Run `iqa-export calibrate {manifest.root} --domain {domain}` first"))
        return GraphChoice(manifest._resolve(entry), entry.sha256, precision == "fp32", True)
    entry = manifest.model_entry(domain, precision)  # int8 missing: the calibrate message
    return GraphChoice(manifest._resolve(entry), entry.sha256, True, False)


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
                                                     trt_has_fp16_flag=True).sha256,
                            name=path.name)
        self._rt = rt = _cudart()
        _ok(rt.cudaSetDevice(index), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        library = os.environ.get(PLUGIN_LIBRARY_ENV)
        if library:
            trt.get_plugin_registry().load_library(library)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data[offset:])
        if self._engine is None:
            raise CdiqaError(describe("Deserialization", "engine", path.name, "None",
                                      "a TensorRT engine", "Rebuild it with `iqa-export build`"))
        self._context = self._engine.create_execution_context()
        self._stream = _ok(rt.cudaStreamCreate(), "cudaStreamCreate")
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
            _ok(rt.cudaFreeHost(ptr) if pinned else rt.cudaFree(ptr), "cudaFree")
        alloc = rt.cudaMallocHost if pinned else rt.cudaMalloc
        ptr = int(_ok(alloc(max(nbytes, 256)), "cudaMallocHost" if pinned else "cudaMalloc"))
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
            _ok(rt.cudaMemcpyAsync(dev, host.ctypes.data, array.nbytes, h2d, stream),
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
            _ok(rt.cudaMemcpyAsync(host.ctypes.data, self._device[name][0], host.nbytes, d2h,
                                   stream), "cudaMemcpyAsync")
        _ok(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: host.copy() for name, host in outputs.items()}

    def _execute(self, shapes: tuple) -> None:
        """Run the context on the stream; for a fixed shape, replay its captured CUDA graph."""
        rt, stream = self._rt, self._stream
        if not self._cuda_graph:
            if not self._context.execute_async_v3(int(stream)):
                raise CdiqaError("TensorRT execute_async_v3 failed; see the TensorRT log above.")
            return
        graph_exec = self._graphs.get(shapes)
        if graph_exec is None:
            # one plain run first: TensorRT does its shape-dependent setup outside the capture
            self._context.execute_async_v3(int(stream))
            mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _ok(rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
            self._context.execute_async_v3(int(stream))
            graph = _ok(rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            graph_exec = _ok(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            _ok(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
            self._graphs[shapes] = graph_exec
        _ok(rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

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


__all__ = ["ENGINE_MAGIC", "EngineHeader", "GpuInfo", "GraphChoice", "TensorRTBackend",
           "TensorRTSession", "check_engine_header", "engine_key", "find_engine", "gpu_info",
           "pack_engine", "plugin_hash", "read_engine_header", "require_tensorrt",
           "select_graph"]
