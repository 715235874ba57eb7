"""Runtime throughput: PyTorch eager vs ONNX Runtime, as recorded in docs/benchmarks.md.

    python benchmarks/runtime_bench.py [BUNDLE] [--threads 1 2] [--repeats 3] [--budget 3]
    python benchmarks/runtime_bench.py BUNDLE --tiling      # tiled vs untiled scores
    python benchmarks/runtime_bench.py --maps [BUNDLE]      # maps-capable bundle vs before

Runs ``cdiqa.export.bench.run_bench`` for each thread count ``repeats`` times (a shared machine
is noisy: the best run of each case is kept, and the load average before each run is
printed), then prints a Markdown table with the machine, the date and this command. Without
BUNDLE the default model is exported to a temporary bundle first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when loaded by path

from _report import command_line, machine, utc_now  # noqa: E402
from cdiqa.export.bench import BenchConfig, BenchReport, run_bench  # noqa: E402


def best_of(reports: list[BenchReport]) -> dict:
    """(case, engine) -> the timing with the highest throughput over the repeats."""
    best = {}
    for r in reports:
        for t in r.timings:
            key = (t.case, t.engine)
            if key not in best or t.pairs_per_s > best[key].pairs_per_s:
                best[key] = t
    return best


def markdown(by_threads: dict[int, list[BenchReport]], command: str) -> str:
    """The results table(s) for docs/benchmarks.md."""
    runs = next(iter(by_threads.values()))
    first = runs[0]
    m = first.machine
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; {m['versions']}; {first.date[:10]}.",
             f"Command: `{command}`; best of {len(runs)} runs per case.", "",
             "| threads | size | batch | torch pairs/s | ORT pairs/s | ORT / torch | torch p50 / p99 ms "
             "| ORT p50 / p99 ms | ORT conv GFLOP/s | ORT peak MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for threads, reports in by_threads.items():
        best = best_of(reports)
        for case in sorted({c for c, _ in best}, key=lambda c: (c.height * c.width, c.batch)):
            t, o = best[(case, "torch")], best[(case, "onnxruntime")]
            lines.append(f"| {threads} | {case.label} | {case.batch} | {t.pairs_per_s:.2f} | "
                         f"{o.pairs_per_s:.2f} | {o.pairs_per_s / t.pairs_per_s:.2f}x | "
                         f"{t.p50_ms:.1f} / {t.p99_ms:.1f} | {o.p50_ms:.1f} / {o.p99_ms:.1f} | "
                         f"{first.gflops(o):.0f} | "
                         f"{max(r.runtime_peak_mb[f'{case.label} b{case.batch}'] for r in reports):.0f} |")
    imports = min(r.import_ms for rs in by_threads.values() for r in rs)
    lines += ["", "Work per pair (useful convolution FLOPs; weights; activations written + read): "
              + "; ".join(f"{k} {c.gflop:.2f} GFLOP, {c.weights_mb:.1f} MiB, "
                          f"{c.activations_mb:.0f} MiB" for k, c in first.costs.items()),
              "sgemm (torch.mm 2048, the practical peak) GFLOP/s by threads: "
              + ", ".join(f"{th}: {max(r.sgemm_gflops for r in rs):.0f}"
                          for th, rs in by_threads.items())]
    process = max(r.process_peak_mb for rs in by_threads.values() for r in rs)
    lines += ["", "ORT peak MiB: peak resident memory of a torch-free process scoring that case. "
              f"Bench process (torch + runtime, all cases): {process:.0f} MiB. "
              f"`import cdiqa.runtime`: {imports:.0f} ms (best cold import)."]
    return "\n".join(lines)


def tiling_table(bundle) -> str:
    """|tiled - untiled| score on a 1024x1024 natural image for tiles of 256/512 px and halos
    of 64..160 px, three distortions (scikit-image and SciPy needed)."""
    import numpy as np
    from scipy.ndimage import uniform_filter
    from skimage import data

    from cdiqa.runtime import Scorer

    whole = Scorer.load(bundle, backend="onnxruntime")
    a = data.astronaut()
    top, bottom = np.concatenate([a, a[:, ::-1]], 1), np.concatenate([a[::-1], a[::-1, ::-1]], 1)
    ref = np.concatenate([top, bottom], 0).astype(np.float32) / 255  # mirrored 2x2: 1024x1024
    rng = np.random.default_rng(0)
    dists = {"noise σ 0.05": ref + rng.normal(0, 0.05, ref.shape),
             "contrast 0.85 + noise 0.02": 0.85 * ref + 0.05 + rng.normal(0, 0.02, ref.shape),
             "5x5 box blur": uniform_filter(ref, size=(5, 5, 1))}
    grid = [(tile, halo) for tile in (256, 512) for halo in (64, 96, 128, 160)]
    lines = ["| distortion | untiled | " + " | ".join(f"tile {t}, halo {h}" for t, h in grid)
             + " |", "| --- " * (len(grid) + 2) + "|"]
    for name, dist in dists.items():
        dist = np.clip(dist, 0, 1).astype(np.float32)
        untiled = whole.score(ref, dist)
        diffs = [abs(untiled - Scorer(whole.manifest, whole.session, tile=t, halo=h)
                     .score(ref, dist)) for t, h in grid]
        lines.append(f"| {name} | {untiled:.4f} | " + " | ".join(f"{d:.1e}" for d in diffs) + " |")
    return "\n".join(lines)


def maps_table(bundle, threads: int, calls: int = 60) -> str:
    """Scorer.score pairs/s of a maps-capable bundle against the same bundle without its maps
    graph (as exported before quality maps), and what one ``quality_map`` costs; 512x384
    astronaut pairs (noise and blur). The three are timed call by call, interleaved, and the
    median call of each is kept: a shared machine's load then falls on all three alike."""
    import json
    import shutil
    import time

    import numpy as np
    from scipy.ndimage import uniform_filter
    from skimage import data

    from cdiqa.manifest import DEFAULT_BUNDLE, FILE_ONNX_MAPS, MANIFEST_FILE
    from cdiqa.runtime import Scorer
    from cdiqa.runtime.backends import SessionOptions

    bundle = Path(bundle or DEFAULT_BUNDLE)
    ref = data.astronaut()[64:448, :512].astype(np.float32) / 255  # 384 x 512
    rng = np.random.default_rng(0)
    dists = [np.clip(d, 0, 1).astype(np.float32) for d in
             (ref + rng.normal(0, 0.05, ref.shape), uniform_filter(ref, size=(5, 5, 1)))]
    with tempfile.TemporaryDirectory(prefix="cdiqa-maps-") as tmp:
        before = Path(tmp) / "before"
        shutil.copytree(bundle, before)
        raw = json.loads((before / MANIFEST_FILE).read_text())
        (before / raw["files"].pop(FILE_ONNX_MAPS)["path"]).unlink()
        (before / MANIFEST_FILE).write_text(json.dumps(raw))
        opts = SessionOptions(threads=threads)
        scorers = {"before": Scorer.load(before, "onnxruntime", options=opts),
                   "maps": Scorer.load(bundle, "onnxruntime", options=opts)}
        jobs = {"score before": lambda d: scorers["before"].score(ref, d),
                "score maps-capable": lambda d: scorers["maps"].score(ref, d),
                "quality_map": lambda d: scorers["maps"].quality_map(ref, d)}
        for job in jobs.values():  # warm-up: sessions, first-call allocations
            job(dists[0])
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for i in range(calls):
            for name, job in jobs.items():
                start = time.perf_counter()
                job(dists[i % 2])
                times[name].append(time.perf_counter() - start)
    best = {k: 1 / float(np.median(v)) for k, v in times.items()}
    base = best["score before"]
    lines = ["| what | pairs/s | ms per pair | ratio to score before |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v:.1f} | {1e3 / v:.1f} | {v / base:.2f} |" for k, v in best.items()]
    return "\n".join(lines)


def ladder_consistency(bundle) -> str:
    """Per KADID ladder on the astronaut (384x512, levels 1..5, seed 0): does the map's mean
    rise with the level, does the severity -ln(score), do they order the levels alike; and the
    SRCC of mean(map) against the severity over every pair (docs/runtime.md, quality maps)."""
    import numpy as np
    from scipy.stats import spearmanr
    from skimage import data

    from cdiqa.manifest import DEFAULT_BUNDLE
    from cdiqa.model.distortions import KADID_TYPES, distort
    from cdiqa.runtime import Scorer

    ref = data.astronaut()[64:448, :512].astype(np.float32) / 255
    rows, sev, means = [], [], []
    with Scorer.load(bundle or DEFAULT_BUNDLE, "onnxruntime") as scorer:
        for kind in (t for t in KADID_TYPES if t.identity_level is None):
            dists = [distort(ref, kind.name, level, seed=0) for level in range(1, 6)]
            g = [-np.log(scorer.score(ref, d)) for d in dists]
            m = [scorer.quality_map(ref, d).mean(dtype=np.float64) for d in dists]
            sev, means = sev + g, means + m
            rows.append((kind.name, all(np.diff(m) > 0), all(np.diff(g) > 0),
                         list(np.argsort(g)) == list(np.argsort(m))))
    lines = [f"{sum(r[1] for r in rows)} of {len(rows)} ladders: map mean rises with the level; "
             f"{sum(r[2] for r in rows)}: severity rises; {sum(r[3] for r in rows)}: same order; "
             f"SRCC(mean map, severity) over {len(sev)} pairs = {spearmanr(sev, means)[0]:.3f}"]
    lines += [f"  not both monotone: {r[0]} (map {r[1]}, severity {r[2]})"
              for r in rows if not (r[1] and r[2])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--tiling", action="store_true", help="tiled vs untiled scores instead")
    parser.add_argument("--maps", action="store_true",
                        help="score speed with and without the maps graph, and quality_map's cost")
    args = parser.parse_args()
    if args.tiling:
        print(tiling_table(args.bundle))
        return
    if args.maps:
        print(f"{machine()}; {utc_now()}; threads {args.threads[0]}\nCommand: "
              f"`{command_line(__file__)}`\n\n{maps_table(args.bundle, args.threads[0])}\n\n"
              f"{ladder_consistency(args.bundle)}")
        return
    with tempfile.TemporaryDirectory(prefix="cdiqa-bench-") as tmp:
        bundle = args.bundle
        if bundle is None:
            from cdiqa.export import export_bundle

            bundle = Path(tmp) / "bundle"
            export_bundle(bundle)
        print(markdown(_runs(bundle, args), command_line(__file__)))


def _runs(bundle, args) -> dict[int, list[BenchReport]]:
    by_threads = {}
    for threads in args.threads:
        by_threads[threads] = []
        for i in range(args.repeats):
            print(f"threads {threads}, run {i + 1}: load average {os.getloadavg()}",
                  file=sys.stderr)
            config = BenchConfig(budget_s=args.budget, threads=threads)
            by_threads[threads].append(run_bench(bundle, config))
    return by_threads


if __name__ == "__main__":
    main()
