"""Timing of the runtime (numpy only): the loop every engine is timed with, and a worker.

Engines are timed *interleaved*, one call of each in turn, so that on a shared machine every
engine sees the same background load (timing them one after the other let a burst of other
work land on one engine only, and moved the ratios by +-30 %).

``python -m cdiqa.runtime.bench BUNDLE CASES_JSON`` runs every case once on the bundle's ONNX
Runtime sessions in a process that never imports torch, and prints one JSON line with that
process's peak resident memory: what an embedded pipeline would need.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
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


def time_engines(calls: dict[str, Callable[[], object]], case: Case, *, budget_s: float,
                 min_calls: int = 3, warmup: int = 1) -> list[Timing]:
    """Time each engine's call, interleaved: ``warmup`` calls each, then rounds of one call
    per engine until ``budget_s`` per engine has passed and each made ``min_calls`` calls.

    Throughput is pairs over the engine's summed call time; latency percentiles are over its
    timed calls.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_calls or time.perf_counter() - start < budget_s * len(calls):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return [Timing(case, name, len(t), case.batch * len(t) / float(np.sum(t)),
                   1e3 * float(np.percentile(t, 50)), 1e3 * float(np.percentile(t, 99)))
            for name, t in times.items()]


def random_pairs(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ref, dist) float32 NCHW batches of ``case``: a reference and a noisy copy."""
    rng = np.random.default_rng(seed)
    ref = rng.random((case.batch, 3, case.height, case.width), np.float32)
    noise = rng.standard_normal(ref.shape, np.float32) * np.float32(0.05)
    return ref, np.clip(ref + noise, 0, 1)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux); elsewhere what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status. Not ``getrusage``: its ``ru_maxrss`` survives
    ``execve``, so a child started from a large process reports the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runtime_engines(bundle: str, threads: int | None) -> dict[str, Callable[[dict], dict]]:
    """engine name -> ``Session.infer`` (feed validation included) of the bundle's ONNX Runtime
    sessions: the FP32 graph, and the INT8/FP16 graphs ``iqa-export calibrate`` wrote."""
    from cdiqa.runtime.backends import SessionOptions
    from cdiqa.runtime.scorer import Scorer

    options = SessionOptions(threads=threads)
    scorer = Scorer.load(bundle, backend="onnxruntime", options=options)
    engines = {"onnxruntime": scorer.session.infer}
    for domain, precision in reduced_precision_graphs(scorer.manifest):
        engines[f"onnxruntime-{precision} ({domain})"] = Scorer.load(
            bundle, backend="onnxruntime", domain=domain, precision=precision,
            options=options, verify=False).session.infer
    return engines


def case_feed(case: Case) -> dict[str, np.ndarray]:
    """The graph feed of ``random_pairs(case)`` with whole-image rois."""
    from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI
    from cdiqa.runtime.preprocess import full_roi

    ref, dist = random_pairs(case)
    return {INPUT_REF: ref, INPUT_DIST: dist,
            INPUT_ROI: full_roi(case.batch, case.height, case.width)}


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
    engines = runtime_engines(bundle, spec["threads"])
    for case in (Case(**c) for c in spec["cases"]):
        feed = case_feed(case)
        for infer in engines.values():
            infer(feed)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    _main(sys.argv[1:])
