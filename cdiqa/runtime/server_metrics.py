"""Prometheus metrics of the HTTP server (``GET /metrics``), one registry per app.

========================================  =========  ========================================
metric                                    type       labels / meaning
========================================  =========  ========================================
cdiqa_http_requests_total                 counter    endpoint, status
cdiqa_http_request_duration_seconds       histogram  endpoint; whole request, body included
cdiqa_batch_size                          histogram  pairs per inference call (micro-batch)
cdiqa_inference_duration_seconds          histogram  one inference call (graph + head)
cdiqa_queue_depth                         gauge      pairs accepted and not yet scored
cdiqa_errors_total                        counter    kind (the error ``code`` of the response)
cdiqa_ready                               gauge      1 when the model is loaded and warm
========================================  =========  ========================================

A registry per app (not the process-global one) keeps apps and tests independent.
"""

from __future__ import annotations

import time
from typing import Sequence

from cdiqa import _lazy

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """The server's metrics. ``render()`` is the /metrics body and its content type."""

    def __init__(self) -> None:
        prom = _lazy.lazy_import("prometheus_client", purpose="The HTTP server's /metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        kw = {"registry": self.registry}
        self.requests = prom.Counter("cdiqa_http_requests", "HTTP requests by endpoint and "
                                     "status", ["endpoint", "status"], **kw)
        self.latency = prom.Histogram("cdiqa_http_request_duration_seconds", "HTTP request "
                                      "latency", ["endpoint"], buckets=_LATENCY_BUCKETS, **kw)
        self.batch_size = prom.Histogram("cdiqa_batch_size", "Pairs per inference call",
                                         buckets=_BATCH_BUCKETS, **kw)
        self.inference = prom.Histogram("cdiqa_inference_duration_seconds", "Duration of one "
                                        "inference call", buckets=_LATENCY_BUCKETS, **kw)
        self.queue_depth = prom.Gauge("cdiqa_queue_depth", "Pairs accepted and not yet scored",
                                      **kw)
        self.errors = prom.Counter("cdiqa_errors", "Errors by kind", ["kind"], **kw)
        self.ready = prom.Gauge("cdiqa_ready", "1 when the model is loaded and warm", **kw)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class ObservedScorer:
    """What ``StreamScorer`` uses of a ``Scorer`` (``max_batch``, ``score_pairs``), with the
    size and duration of every micro-batch recorded."""

    def __init__(self, scorer, metrics: Metrics) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.max_batch = scorer.max_batch
        self.max_pixels = scorer.max_pixels

    def score_pairs(self, pairs: Sequence, **kw):
        """``Scorer.score_pairs``, observed."""
        start = time.perf_counter()
        try:
            return self.scorer.score_pairs(pairs, **kw)
        finally:
            self.metrics.batch_size.observe(len(pairs))
            self.metrics.inference.observe(time.perf_counter() - start)
