"""Timing of the runtime (numpy only): the loop every engine is timed with, and a worker.

``python -m cdiqa.runtime.bench BUNDLE CASES_JSON`` times the ONNX Runtime session of a bundle
in a process that never imports torch, and prints one JSON line with the timings and that
process's peak resident memory: what an embedded pipeline would see.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: image ``height`` x ``width``, ``batch`` pairs per call."""

    height: int
    width: int
    batch: int

    @property
    def label(self) -> str:
        """'WxH' as image sizes are usually written."""
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Timing:
    """Measured calls of one case: throughput and per-call latency percentiles."""

    case: Case
    engine: str
    calls: int
    pairs_per_s: float
    p50_ms: float
    p99_ms: float


def time_calls(fn: Callable[[], object], case: Case, engine: str, *, budget_s: float,
               min_calls: int = 3, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times, then until ``budget_s`` has passed and at least
    ``min_calls`` calls were made; latency percentiles are over the timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    total = float(np.sum(times))
    return Timing(case, engine, len(times), case.batch * len(times) / total,
                  1e3 * float(np.percentile(times, 50)), 1e3 * float(np.percentile(times, 99)))


def random_pairs(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ref, dist) float32 NCHW batches of ``case``: a reference and a noisy copy."""
    rng = np.random.default_rng(seed)
    ref = rng.random((case.batch, 3, case.height, case.width), np.float32)
    noise = rng.standard_normal(ref.shape, np.float32) * np.float32(0.05)
    return ref, np.clip(ref + noise, 0, 1)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_runtime(bundle: str, cases: list[Case], *, budget_s: float, threads: int | None,
                 min_calls: int = 3) -> list[Timing]:
    """Time ``Session.infer`` (feed validation included) of the bundle on ONNX Runtime."""
    from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI
    from cdiqa.runtime.backends import SessionOptions
    from cdiqa.runtime.preprocess import full_roi
    from cdiqa.runtime.scorer import Scorer

    scorer = Scorer.load(bundle, backend="onnxruntime", options=SessionOptions(threads=threads))
    sessions = {"onnxruntime": scorer}
    for domain, precision in reduced_precision_graphs(scorer.manifest):
        sessions[f"onnxruntime-{precision} ({domain})"] = Scorer.load(
            bundle, backend="onnxruntime", domain=domain, precision=precision,
            options=SessionOptions(threads=threads), verify=False)
    out = []
    for case in cases:
        ref, dist = random_pairs(case)
        feed = {INPUT_REF: ref, INPUT_DIST: dist,
                INPUT_ROI: full_roi(case.batch, case.height, case.width)}
        for engine, s in sessions.items():
            out.append(time_calls(lambda: s.session.infer(feed), case, engine,
                                  budget_s=budget_s, min_calls=min_calls))
    return out


def reduced_precision_graphs(manifest) -> list[tuple[str, str]]:
    """(domain, precision) of the INT8/FP16 graphs ``iqa-export calibrate`` wrote: those of
    the default domain if it has any, else of the first calibrated domain."""
    models = manifest.domain_models
    names = sorted(models, key=lambda d: d != manifest.default_domain)
    for domain in names:
        found = [(domain, p) for p in ("int8", "fp16") if p in models[domain].files]
        if found:
            return found
    return []


def _main(argv: list[str]) -> None:
    bundle, spec = argv[0], json.loads(argv[1])
    cases = [Case(**c) for c in spec["cases"]]
    timings = time_runtime(bundle, cases, budget_s=spec["budget_s"], threads=spec["threads"],
                           min_calls=spec["min_calls"])
    print(json.dumps({"timings": [asdict(t) for t in timings], "peak_rss_mb": peak_rss_mb(),
                      "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    _main(sys.argv[1:])
