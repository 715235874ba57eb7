"""Cross-domain benchmark and reduced-precision speed, in one run (docs/benchmarks.md).

    python benchmarks/domains.py [--checkpoint model.pt] [--out runs/domains] [--steps 300]

1. exports the model (default: the bundled one) to ``OUT/bundle``;
2. ``calibrate``s every built-in domain (natural without adaptation: it is the model's own
   domain and its profile is the bundle's default), accepting gate failures so every row is
   measured, and records each domain's INT8 / FP16 gates;
3. ``evaluate_domain`` for every domain: natural model vs adapted vs INT8/FP16 vs PSNR,
   SSIM, MS-SSIM, GMSD, on held-out references;
4. times FP32, INT8 and FP16 graphs on ONNX Runtime CPU at 512x384 (and 256x256), batch 1,
   interleaved call by call so background load hits every engine alike.

Writes ``OUT/domains.json`` and ``OUT/domains.md`` (machine, date, command, tables).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when loaded by path

from _report import command_line, machine, write_text  # noqa: E402

DOMAINS = ("natural", "underwater", "medical", "screen", "neutron")


def speed(bundle: Path, domain: str, sizes, threads: int, budget: float) -> list[dict]:
    """Interleaved timing of the domain's FP32/INT8/FP16 graphs on ONNX Runtime CPU."""
    from cdiqa.runtime import Scorer, SessionOptions
    from cdiqa.runtime.preprocess import full_roi

    opts = SessionOptions(threads=threads)
    scorers = {p: Scorer.load(bundle, backend="onnxruntime", domain=domain, precision=p,
                              options=opts, verify=False) for p in ("fp32", "int8", "fp16")}
    rows = []
    for h, w in sizes:
        rng = np.random.default_rng(0)
        ref = rng.random((1, 3, h, w), np.float32)
        dist = np.clip(ref + 0.05 * rng.standard_normal(ref.shape, np.float32), 0, 1)
        feed = {"ref": ref, "dist": dist, "roi": full_roi(1, h, w)}
        times = {p: [] for p in scorers}
        for s in scorers.values():
            s.session.infer(feed)
        start = time.perf_counter()
        while time.perf_counter() - start < budget * len(scorers) or \
                min(len(t) for t in times.values()) < 5:
            for p, s in scorers.items():
                t0 = time.perf_counter()
                s.session.infer(feed)
                times[p].append(time.perf_counter() - t0)
        base = float(np.median(times["fp32"]))
        for p, t in times.items():
            med = float(np.median(t))
            rows.append({"size": f"{w}x{h}", "threads": threads, "precision": p,
                         "calls": len(t), "median_ms": 1e3 * med, "pairs_per_s": 1 / med,
                         "speedup_vs_fp32": base / med})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="model.pt; default: the bundled model")
    ap.add_argument("--head", default=None, help="natural head JSON; default: the bundled one")
    ap.add_argument("--out", default="runs/domains")
    ap.add_argument("--domains", nargs="*", default=list(DOMAINS))
    ap.add_argument("--steps", type=int, default=300, help="adaptation steps per domain")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds per engine and size")
    args = ap.parse_args(argv)

    from cdiqa.calibration import CalibConfig, calibrate
    from cdiqa.calibration.evaluate import evaluate_domain, to_markdown
    from cdiqa.calibration.gate import describe_gate
    from cdiqa.export import export_bundle

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / "bundle"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    header = machine()
    if not (bundle / "manifest.json").is_file():
        export_bundle(bundle, args.checkpoint, {"natural": args.head} if args.head else None)
    gates, timings = {}, {}
    for d in args.domains:
        t0 = time.perf_counter()
        report = calibrate(bundle, CalibConfig(domain=d, adapt=d != "natural", steps=args.steps,
                                               accept_drop=True, threads=args.threads))
        timings[d] = time.perf_counter() - t0
        gates[d] = {p: asdict(g) for p, g in report.gates.items()}
        for g in report.gates.values():
            print(f"{d}: {describe_gate(g)}", flush=True)
    results = [evaluate_domain(bundle, d, threads=args.threads) for d in args.domains]
    print(to_markdown(results), flush=True)
    rows = []
    for threads in sorted({1, args.threads}):
        rows += speed(bundle, "underwater" if "underwater" in args.domains else args.domains[0],
                      ((384, 512), (256, 256)), threads, args.budget)
    command = command_line(__file__, argv)
    blob = {"machine": header, "date": started, "command": command, "gates": gates,
            "calibrate_seconds": timings, "eval": [r.to_dict() for r in results],
            "speed": rows}
    write_text(out / "domains.json", json.dumps(blob, indent=1))
    md = [f"Machine: {header}. Date: {started}. Command: `{command}`.", "",
          "| domain | precision | SRCC vs FP32 | mean abs diff | ladder SRCC (FP32) | pass |",
          "|---|---|---|---|---|---|"]
    for d, gs in gates.items():
        for p, g in gs.items():
            md.append(f"| {d} | {p} | {g['srcc_vs_fp32']:.4f} | {g['mean_abs_diff']:.4f} | "
                      f"{g['srcc_ladder']:.3f} ({g['srcc_ladder_fp32']:.3f}) | "
                      f"{'yes' if g['passed'] else 'no'} |")
    md += ["", to_markdown(results), "",
           "| size | threads | precision | median ms | pairs/s | vs FP32 |",
           "|---|---|---|---|---|---|"]
    md += [f"| {r['size']} | {r['threads']} | {r['precision']} | {r['median_ms']:.1f} | "
           f"{r['pairs_per_s']:.1f} | {r['speedup_vs_fp32']:.2f}x |" for r in rows]
    write_text(out / "domains.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
