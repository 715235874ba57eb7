"""``precision="auto"``: the fastest graph of a domain that passed its accuracy gate, here.

INT8 is not always faster: its speed depends on the CPU's vector extensions (VNNI) and on the
backend, so no choice made on another machine holds on this one. ``choose_precision`` times
each gated graph on a small probe pair with the session the scorer will use and keeps the
fastest. A precision whose gate failed (and was not accepted with ``--accept-drop``) is
never a candidate, and graphs with the same bytes are timed once (the pyramid's INT8 graph is
its FP32 graph: nothing in it is quantizable).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from cdiqa.manifest import Manifest

AUTO = "auto"
#: probe pair side: large enough that the graph's work, not the call overhead, dominates
PROBE_SIZE = 256
#: timed runs per candidate after one warm-up run; the minimum counts
PROBE_RUNS = 3


def gated_precisions(manifest: Manifest, domain: str | None = None) -> list[str]:
    """"fp32", then each reduced precision of ``domain`` whose gate passed or was accepted."""
    models = manifest.domain_models.get(domain or manifest.default_domain)
    out = ["fp32"]
    if models is not None:
        out += [p for p in ("int8", "fp16") if p in models.files
                and p in models.gates and models.gates[p].accepted]
    return out


def choose_precision(manifest: Manifest, domain: str | None, open_session: Callable,
                     clock: Callable[[], float] = time.perf_counter) -> str:
    """The fastest of ``gated_precisions`` (ties: the first listed, fp32).

    ``open_session(precision)`` opens the session that scoring at that precision would use.
    """
    from cdiqa.runtime.preprocess import feed

    distinct: dict[str, str] = {}  # sha256 -> first precision with that graph
    for p in gated_precisions(manifest, domain):
        distinct.setdefault(manifest.model_entry(domain, p).sha256, p)
    candidates = list(distinct.values())
    if len(candidates) == 1:
        return candidates[0]
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (PROBE_SIZE, PROBE_SIZE, 3)).astype(np.float32)
    inputs = feed([ref], [np.clip(ref + 0.05, 0, 1).astype(np.float32)])
    times = {}
    for p in candidates:
        session = open_session(p)
        try:
            session.infer(inputs)  # warm-up: allocation, kernel selection
            runs = []
            for _ in range(PROBE_RUNS):
                start = clock()
                session.infer(inputs)
                runs.append(clock() - start)
            times[p] = min(runs)
        finally:
            session.close()
    return min(candidates, key=lambda p: (times[p], candidates.index(p)))
