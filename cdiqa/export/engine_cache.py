"""A cache of built TensorRT engines, keyed by everything a plan depends on.

A TensorRT plan is only valid for the graph it was built from, the plugin inside it, the
TensorRT version, the GPU (name and compute capability), the precision and the optimization
profile; the version- and hardware-compatibility flags change the plan too. The key is a
sha256 over exactly those (:func:`engine_cache_key`, a pure function), so a change of any of
them misses the cache and a hit is always safe to reuse. Entries are whole engine files
(header + plan, :func:`cdiqa.engine_format.pack_engine`) named ``<key>.engine``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cdiqa.files import atomic_write

#: Bumped when the key's inputs or the entry layout change.
CACHE_FORMAT = "cdiqa-engine-1"


def engine_cache_key(*, onnx_sha256: str, plugin_hash: str, trt_version: str, gpu_name: str,
                     compute_capability: str, precision: str,
                     profile: dict[str, list[list[int]]], version_compatible: bool = False,
                     hardware_compatible: bool = False) -> str:
    """sha256 hex over every input a TensorRT plan depends on.

    >>> k = dict(onnx_sha256="a", plugin_hash="p", trt_version="10.8.0", gpu_name="H100",
    ...          compute_capability="9.0", precision="fp16", profile={"ref": [[1, 3, 64, 64]]})
    >>> engine_cache_key(**k) == engine_cache_key(**{**k, "precision": "fp32"})
    False
    """
    parts = {"format": CACHE_FORMAT, "onnx": onnx_sha256, "plugin": plugin_hash,
             "trt": trt_version, "gpu": gpu_name, "cc": compute_capability,
             "precision": precision, "profile": profile,
             "version_compatible": bool(version_compatible),
             "hardware_compatible": bool(hardware_compatible)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$CDIQA_CACHE/engines`` if set, else ``~/.cache/cdiqa/engines``."""
    root = os.environ.get("CDIQA_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "cdiqa"
    return base / "engines"


def cache_lookup(cache_dir: str | os.PathLike, key: str) -> bytes | None:
    """The engine file's bytes cached under ``key``, or None."""
    path = Path(cache_dir) / f"{key}.engine"
    try:
        return path.read_bytes()
    except OSError:
        return None


def cache_store(cache_dir: str | os.PathLike, key: str, data: bytes) -> Path | None:
    """Write an engine file under ``key`` atomically; None if the cache is not writable."""
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write(folder / f"{key}.engine", lambda f: f.write(data))
    except OSError:
        return None  # a read-only cache only costs a rebuild


__all__ = ["CACHE_FORMAT", "cache_lookup", "cache_store", "default_cache_dir",
           "engine_cache_key"]
