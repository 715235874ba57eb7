"""The embedded runtime: numpy + a backend (ONNX Runtime, TensorRT); never torch.

>>> from cdiqa.runtime import Scorer
>>> with Scorer.load("bundle") as scorer:                      # doctest: +SKIP
...     scorer.score("ref.png", "dist.png")

Modules: ``scorer`` (Scorer), ``preprocess`` (images -> feeds), ``tiling`` (large scans),
``stream`` (pipelines: micro-batching, backpressure), ``batch`` (pairs CSVs and folders, one
result or error row per pair), ``backends`` (protocol + registry).
"""

from cdiqa.runtime.backends import SessionOptions
from cdiqa.runtime.scorer import MAX_BATCH, Scorer, open_session

__all__ = ["MAX_BATCH", "Scorer", "SessionOptions", "open_session"]
