"""The TensorRT engine file format of cdiqa, shared by the builder and the runtime (stdlib only).

An engine file is our own small header followed by TensorRT's serialized engine::

    b"CDIQATRT" | uint32 little-endian n | n bytes of UTF-8 JSON | TensorRT plan
      magic       header length            EngineHeader             deserialize_cuda_engine

The header records what the plan is only valid for: TensorRT version, GPU name and compute
capability, the masking plugin's hash (:func:`plugin_hash`), the ONNX graph's sha256,
precision, domain and optimization profile. :func:`check_engine_header` (a pure function)
refuses a plan built for another TensorRT, GPU or plugin with the command that rebuilds it:
TensorRT itself would either fail to deserialize with an opaque message or, worse, load a
plan tuned for another GPU.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from importlib import resources

from cdiqa.errors import ManifestError, describe
from cdiqa.manifest import PluginSpec

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
    now (``cdiqa.manifest.select_graph``); a recalibrated domain makes an older engine stale.

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


def engine_key(domain: str, precision: str, arch: str) -> str:
    """Key of ``Manifest.engines`` for one built engine: ``"natural/fp16/sm_90"``."""
    return f"{domain}/{precision}/{arch}"


__all__ = ["ENGINE_MAGIC", "EngineHeader", "HEADER_FORMAT", "PLUGIN_SOURCES",
           "check_engine_header", "engine_key", "pack_engine", "plugin_hash",
           "read_engine_header"]
