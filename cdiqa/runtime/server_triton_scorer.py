"""Triton Python-backend model ``cdiqa`` of the ``python`` flavour: the whole runtime in Triton.

``cdiqa.export.triton`` copies this file to ``cdiqa/1/model.py``, beside ``bundle/`` (a copy of
the bundle) and ``vendor/cdiqa/`` (the torch-free cdiqa modules the runtime imports, copied
from the cdiqa that wrote the repository). Triton's Python environment needs numpy and
onnxruntime (onnxruntime-gpu for ``KIND_GPU`` instances); this is the flavour for Triton
builds without the ONNX Runtime backend, such as the CPU-only server in nvidia-pytriton::

    ref, dist (B, 3, H, W), roi (B, 4) ─► Scorer.stats (ONNX Runtime)
                                        ─► cdiqa.heads.score_from_stats(head, ...) ─► score (B, 1)

The inputs and output are those of the ensemble flavour, so one client serves both.
Parameters (config.pbtxt): ``domain`` (the head), ``threads`` (ORT intra-op threads).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

#: the bundle's copy, beside model.py
BUNDLE_DIR = "bundle"


class TritonPythonModel:
    """``cdiqa``: ref, dist FP32 (B, 3, H, W) and roi INT32 (B, 4) -> score FP32 (B, 1)."""

    def initialize(self, args: dict) -> None:
        """Open the bundle with the vendored runtime on this instance's device."""
        here = Path(args["model_repository"]) / str(args["model_version"])
        if str(here / "vendor") not in sys.path:
            sys.path.insert(0, str(here / "vendor"))
        from cdiqa.runtime import Scorer, SessionOptions
        from cdiqa.runtime.server_triton_head import model_parameters

        config = json.loads(args["model_config"])
        params = model_parameters(config)
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', 0)}" if gpu else "cpu"
        threads = int(params["threads"]) if params.get("threads") else None
        self.inputs = [t["name"] for t in config["input"]]
        self.output = config["output"][0]["name"]
        self.scorer = Scorer.load(here / BUNDLE_DIR, backend="onnxruntime", device=device,
                                  domain=params.get("domain") or None,
                                  options=SessionOptions(threads=threads))
        size = self.scorer.manifest.preprocessing.min_size  # warm-up (see export.triton._warmup)
        self.scorer.score(np.zeros((size, size, 3), np.float32), np.zeros((size, size, 3),
                                                                          np.float32))

    def execute(self, requests) -> list:
        """Score every request; same-size requests run as one ONNX Runtime call."""
        import triton_python_backend_utils as pb_utils
        from cdiqa.runtime.server_triton_head import respond

        return respond(pb_utils, requests, self.inputs, self.output, self._compute)

    def _compute(self, *arrays: np.ndarray) -> np.ndarray:
        from cdiqa.heads import score_from_stats

        stats = self.scorer.stats(dict(zip(self.inputs, arrays)))
        return score_from_stats(self.scorer.head, *stats)

    def finalize(self) -> None:
        """Close the ONNX Runtime session."""
        self.scorer.close()
