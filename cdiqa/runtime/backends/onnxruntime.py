"""ONNX Runtime backend: runs the bundle's portable ``model.onnx`` on CPU (or CUDA if present).

The graph is the portable one ``cdiqa.manifest.select_graph(manifest, options.domain,
options.precision)`` names: the bundle's ``model.onnx``, or a calibrated domain's adapted /
INT8 (Q/DQ) / FP16 graph.

Session settings and why:

- graph optimization ``ORT_ENABLE_ALL``: constant folding, Conv+Relu / Conv+Add fusion and,
  on x86, the NCHWc layout transform (blocked convolutions) that most of the speed comes from;
- ``intra_op_num_threads`` = ``SessionOptions.threads`` (default: ORT's, one per physical
  core), ``inter_op_num_threads`` = 1 and sequential execution: the graph is one chain of
  convolutions, so parallelism inside an op is what pays;
- optional optimized-model cache (``SessionOptions.cache_dir``): the optimized graph is saved
  once, keyed by the model's sha256, ORT version and device, and loaded with optimizations
  off afterwards (an NCHWc graph is specific to the CPU that made it: keep the cache per
  machine).

``InferenceSession.run`` is thread-safe, so one session serves every thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, ConfigError, describe
from cdiqa.manifest import Manifest, select_graph
from cdiqa.runtime.backends.base import Session, SessionOptions


class OnnxRuntimeBackend:
    """Creates ``OnnxRuntimeSession`` objects."""

    name = "onnxruntime"

    def load(self, manifest: Manifest, *, device: str | None = None,
             options: SessionOptions | None = None) -> "OnnxRuntimeSession":
        """Open ``model.onnx`` of the bundle on ``device`` ("cpu" default, "cuda[:N]")."""
        return OnnxRuntimeSession(manifest, device or "cpu", options or SessionOptions())


class OnnxRuntimeSession(Session):
    """An ``onnxruntime.InferenceSession`` behind the validated ``Session.infer``."""

    def __init__(self, manifest: Manifest, device: str, options: SessionOptions) -> None:
        super().__init__(manifest, device)
        ort = _lazy.onnxruntime()
        providers = _providers(ort, device)
        graph = select_graph(manifest, options.domain, options.precision)
        model = graph.checked_path()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if options.threads is not None:
            if int(options.threads) < 1:
                raise ConfigError(describe("Threads", "session option", "threads",
                                           options.threads, ">= 1 (or None for all cores)",
                                           "Pass a positive thread count"))
            so.intra_op_num_threads = int(options.threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        publish = None
        if options.cache_dir is not None:
            model, publish = _use_cache(ort, so, graph.sha256[:16], model,
                                        Path(options.cache_dir), device)
        self._session = ort.InferenceSession(str(model), so, providers=providers)
        if publish is not None:
            os.replace(*publish)  # the optimized model ORT just wrote becomes the cache entry

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(list(self.output_names), dict(feed))
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        """Drop the ORT session (ORT frees it with the last reference)."""
        self._session = None


def _providers(ort, device: str) -> list:
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(
                f"ONNX Runtime on device '{device}' needs onnxruntime-gpu (CUDAExecutionProvider"
                f" not in {ort.get_available_providers()}); install 'onnxruntime-gpu' or use "
                "device='cpu'.")
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ConfigError(describe("Device", "backend", "onnxruntime", repr(device),
                               "'cpu', 'cuda' or 'cuda:N'", "Pick a device ONNX Runtime has"))


def _use_cache(ort, so, key: str, model: Path, cache_dir: Path, device: str
               ) -> tuple[Path, tuple[Path, Path] | None]:
    """(model to load, (written temp file, cache entry) to publish after loading, or None).

    A cached optimized model is loaded with optimizations off; otherwise ORT is told to write
    the optimized graph to a temp file while it creates the session.
    """
    target = cache_dir / f"{key}-ort{ort.__version__}-{device.replace(':', '')}.onnx"
    if target.is_file():
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return target, None
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    so.optimized_model_filepath = str(tmp)
    return model, (tmp, target)
