"""Score pairs on a Triton Inference Server that serves a repository from ``iqa-export triton``.

The contract of every repository flavour (see ``cdiqa.export.triton``) is the same: model
``cdiqa`` takes the graph's inputs ``ref``, ``dist`` (B, 3, H, W) FP32 and ``roi`` (B, 4) INT32,
and returns ``score`` (B, 1) FP32. Preprocessing happens here, in numpy, exactly as in the
in-process runtime (``cdiqa.runtime.preprocess``), so a pair scores the same either way::

    files/arrays ─► pair_from ─► same-size groups ─► feed (NCHW + full roi) ─► Triton ─► score

>>> scorer = TritonScorer("127.0.0.1:8000")              # doctest: +SKIP
>>> scorer.score("ref.png", "dist.png")                  # doctest: +SKIP
0.8731
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, CdiqaError, ConfigError, ShapeError, describe
from cdiqa.runtime.preprocess import feed, group_by_size, pair_from
# the repository's names, here too for clients that import them from this module
from cdiqa.triton_layout import (GRAPH_MODEL, HEAD_MODEL, MODEL, OUTPUT_SCORE,  # noqa: F401
                                 TRITON_DTYPES)
PROTOCOLS = ("http", "grpc")
_DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


class TritonError(CdiqaError):
    """The Triton server refused or failed a request."""


class TritonScorer:
    """Scores (reference, distorted) pairs through a Triton server.

    Args:
        url: "host:port" of the server (default port 8000 for http, 8001 for grpc).
        protocol: "http" or "grpc".
        model: the model to call.
        max_batch: most pairs per request (at most the repository's ``max_batch_size``).
        timeout: seconds to wait for a response.
    """

    def __init__(self, url: str = "127.0.0.1", protocol: str = "http", model: str = MODEL, *,
                 max_batch: int = 8, timeout: float = 60.0) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(describe("Protocol", "Triton client", "protocol", repr(protocol),
                                       f"one of {PROTOCOLS}", "Pick http or grpc"))
        self.protocol = protocol
        self.url = url if ":" in url else f"{url}:{_DEFAULT_PORTS[protocol]}"
        self.model = model
        self.max_batch = int(max_batch)
        self.timeout = float(timeout)
        self._api = _lazy.lazy_import(f"tritonclient.{protocol}", purpose="The Triton client")
        self._exc = _lazy.lazy_import("tritonclient.utils").InferenceServerException
        kwargs = ({"connection_timeout": self.timeout, "network_timeout": self.timeout}
                  if protocol == "http" else {})
        self._client = self._api.InferenceServerClient(self.url, **kwargs)

    def is_ready(self) -> bool:
        """Whether the server is up and ``model`` is loaded and ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:  # refused connection, reset, DNS: all mean "not ready"
            return False

    def score(self, ref, dist) -> float:
        """Quality of one pair (file paths or arrays), in [0, 1], higher is better."""
        return float(self.score_batch([ref], [dist])[0])

    def score_batch(self, refs: Sequence, dists: Sequence) -> np.ndarray:
        """Qualities (N,) of N pairs; same-size pairs go together, ``max_batch`` per request."""
        if len(refs) != len(dists):
            raise ShapeError(describe("Count", "images", "dists", len(dists),
                                      f"{len(refs)} like refs", "Pass one distorted per reference"))
        pairs = [pair_from(r, d, i) for i, (r, d) in enumerate(zip(refs, dists))]
        out = np.empty(len(pairs), np.float32)
        for idx in group_by_size((p[0] for p in pairs), self.max_batch):
            out[idx] = self.infer(feed([pairs[i][0] for i in idx], [pairs[i][1] for i in idx]))
        return out

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Scores (B,) of one graph feed (``cdiqa.runtime.preprocess.feed``)."""
        tensors = []
        for name, array in inputs.items():
            dtype = TRITON_DTYPES.get(array.dtype.name)
            if dtype is None:
                raise ShapeError(describe("Dtype", "tensor", name, array.dtype,
                                          f"one of {sorted(TRITON_DTYPES)}",
                                          "Build the feed with cdiqa.runtime.preprocess.feed"))
            t = self._api.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(np.ascontiguousarray(array))
            tensors.append(t)
        outputs = [self._api.InferRequestedOutput(OUTPUT_SCORE)]
        try:
            result = self._client.infer(self.model, tensors, outputs=outputs,
                                        **self._timeout_kwargs())
        except self._exc as exc:
            if "UNAVAILABLE" in str(exc.status()):  # grpc: nothing listens at the url
                raise _unreachable(self.url, exc.message()) from None
            raise TritonError(describe("Inference", "Triton model", self.model,
                                       exc.message() or str(exc), "a score",
                                       f"Check the server at {self.url} and its log")) from None
        except OSError as exc:  # http: connection refused / reset
            raise _unreachable(self.url, exc) from None
        return result.as_numpy(OUTPUT_SCORE).reshape(-1)

    def _timeout_kwargs(self) -> dict:
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def __enter__(self) -> "TritonScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unreachable(url: str, reason) -> BackendUnavailable:
    return BackendUnavailable(describe("Connection", "Triton server", url, reason,
                                       "a running server", "Start tritonserver or fix the url"))
