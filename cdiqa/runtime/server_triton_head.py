"""Triton Python-backend model ``cdiqa_head``: a domain's quality head on the graph's stats.

``cdiqa.export.triton`` copies this file to ``cdiqa_head/1/model.py`` of an ensemble repository,
beside ``profile.json`` (the domain's head) and ``vendor/cdiqa/`` (the numpy-only cdiqa modules
it imports, copied from the cdiqa that wrote the repository), so Triton's Python environment
needs numpy and nothing else::

    sums, sumsq, counts (B, D) ─► cdiqa.heads.score_from_stats(head, ...) ─► score (B, 1)

The helpers below are shared with the ``python`` flavour's model (``server_triton_scorer``).
Nothing here runs outside Triton except through them; ``triton_python_backend_utils`` exists
only inside Triton's Python stub and is passed in, never imported at module level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

#: the head's JSON, beside model.py
PROFILE_FILE = "profile.json"
#: the vendored modules, beside model.py
VENDOR_DIR = "vendor"


def version_dir(args: dict) -> Path:
    """The model version folder Triton loaded (``<repo>/<model>/<version>``)."""
    return Path(args["model_repository"]) / str(args["model_version"])


def use_vendored(args: dict) -> None:
    """Put the repository's copy of cdiqa first on ``sys.path`` (exactly what wrote it)."""
    vendor = str(version_dir(args) / VENDOR_DIR)
    if vendor not in sys.path:
        sys.path.insert(0, vendor)


def model_parameters(config: dict) -> dict[str, str]:
    """``parameters`` of a model config as {key: string_value}."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def run_batches(compute: Callable[..., np.ndarray], arrays: Sequence[Sequence[np.ndarray]]
                ) -> list:
    """Scores (B_i, 1) or the exception, per request; same-shape requests run as one batch.

    ``arrays[i]`` holds request i's inputs in config order. If a batch fails, its requests are
    run one by one, so only the faulty request gets the error.
    """
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(x.shape[1:] for x in a), []).append(i)
    results: list = [None] * len(arrays)
    for idx in groups.values():
        results_of = _run(compute, arrays, idx)
        for i in idx:
            results[i] = results_of[i]
    return results


def _run(compute, arrays, idx: list[int]) -> dict:
    try:
        batch = [np.concatenate([arrays[i][k] for i in idx]) for k in range(len(arrays[idx[0]]))]
        scores = np.asarray(compute(*batch), np.float32).reshape(-1, 1)
    except Exception as exc:  # reported to the caller through Triton, the model stays up
        if len(idx) == 1:
            return {idx[0]: exc}
        return {i: r for j in idx for i, r in _run(compute, arrays, [j]).items()}
    cuts = np.cumsum([arrays[i][0].shape[0] for i in idx])[:-1]
    return dict(zip(idx, np.split(scores, cuts)))


def respond(pb_utils, requests, inputs: Sequence[str], output: str,
            compute: Callable[..., np.ndarray]) -> list:
    """Triton responses for ``requests``: ``compute(*inputs)`` -> scores, or the error."""
    arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in inputs]
              for r in requests]
    responses = []
    for result in run_batches(compute, arrays):
        if isinstance(result, Exception):
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"{type(result).__name__}: "
                                                              f"{result}")))
        else:
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(output, result)]))
    return responses


class TritonPythonModel:
    """``cdiqa_head``: inputs sums, sumsq, counts (B, D) FP32 -> output score (B, 1) FP32."""

    def initialize(self, args: dict) -> None:
        """Load ``profile.json`` with the vendored ``cdiqa.heads``."""
        use_vendored(args)
        from cdiqa.heads import load_head

        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.output = config["output"][0]["name"]
        self.head = load_head(json.loads((version_dir(args) / PROFILE_FILE).read_text("utf-8")))
        zeros = np.zeros((1, self.head.dim // 2), np.float32)  # v = [mean, std] of D channels
        self._compute(zeros, zeros, np.ones_like(zeros))  # warm-up (see export.triton._warmup)

    def _compute(self, sums, sumsq, counts) -> np.ndarray:
        from cdiqa.heads import score_from_stats

        return score_from_stats(self.head, sums, sumsq, counts)

    def execute(self, requests) -> list:
        """Score every request (see ``respond``)."""
        import triton_python_backend_utils as pb_utils

        return respond(pb_utils, requests, self.inputs, self.output, self._compute)
