"""Pairs/s of two bundles' ONNX Runtime graphs against the classical metrics, in one run.

    python benchmarks/model_speed.py NEW_BUNDLE [OLD_BUNDLE] [--threads 1 2] [--budget 3]

Per thread count, at 512 x 384 (KADID-10k's size) and batch 1, times interleaved
(``cdiqa.runtime.bench.time_engines``: one call of each engine in turn, so all see the same
background load): ``Scorer.score`` of each bundle (preprocessing, ONNX Runtime, head) and
``cdiqa.metrics`` HaarPSI, MDSI and GMSD (numpy, single-threaded) on the same photograph-like
pair. OLD_BUNDLE defaults to the bundle shipped in the package. Prints a Markdown table with
each engine's ratio to the new bundle, and the machine line of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, machine, utc_now  # noqa: E402


def engines(new: str, old: str, threads: int) -> dict:
    import numpy as np

    from cdiqa import metrics
    from cdiqa.runtime import Scorer, SessionOptions
    from cdiqa.runtime.bench import Case, random_pairs

    ref, dist = random_pairs(Case(384, 512, 1))
    ref, dist = (np.ascontiguousarray(x[0].transpose(1, 2, 0)) for x in (ref, dist))
    opts = SessionOptions(threads=threads)
    scorers = {name: Scorer.load(b, backend="onnxruntime", options=opts)
               for name, b in (("new bundle", new), ("old bundle", old))}
    calls = {name: (lambda s=s: s.score(ref, dist)) for name, s in scorers.items()}
    calls.update({name: (lambda fn=fn: fn(ref, dist)) for name, fn in
                  (("HaarPSI (numpy)", metrics.haarpsi), ("MDSI (numpy)", metrics.mdsi),
                   ("GMSD (numpy)", metrics.gmsd))})
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new")
    p.add_argument("old", nargs="?", default=None)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--budget", type=float, default=3.0, help="seconds per engine and thread")
    args = p.parse_args(argv)

    from cdiqa.manifest import DEFAULT_BUNDLE
    from cdiqa.runtime.bench import Case, time_engines

    old = args.old or str(DEFAULT_BUNDLE)
    lines = [f"- machine: {machine()}", f"- date: {utc_now()}",
             f"- command: `{command_line(__file__, argv)}`", "",
             "| threads | engine | pairs/s | x new bundle | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|"]
    for threads in args.threads:
        timings = time_engines(engines(args.new, old, threads), Case(384, 512, 1),
                               budget_s=args.budget)
        base = next(t.pairs_per_s for t in timings if t.engine == "new bundle")
        lines += [f"| {threads} | {t.engine} | {t.pairs_per_s:.1f} | "
                  f"{t.pairs_per_s / base:.2f} | {t.p50_ms:.1f} | {t.p99_ms:.1f} |"
                  for t in timings]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
