#!/usr/bin/env python3
"""GPU check of the fused CUDA masking kernel: build, correctness, determinism, timing.

Run from the repository root on a machine with an NVIDIA GPU (cdiqa need not be installed)::

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out "$OUT"

Sections, each guarded so that one failure does not lose the others (JSON is rewritten after
every section, so even a run cut short leaves its results):

1. env + build: versions, device, PTX/cubin for the device's architecture (nvcc there,
   NVRTC as fallback) and the ptxas report.
2. correctness: every case gets fresh random inputs; the kernel (output and workspace
   poisoned with NaN) against ``cdiqa.masking.masking_stats`` in float64, within
   ``cdiqa.tolerances`` ("cuda", "fp32"/"fp16"); FP16 against the reference computed on the
   FP16-rounded inputs. Each case runs twice: the two outputs must be bitwise identical.
3. timing (CUDA events, median of many launches, inputs rotated over enough sets to defeat
   L2, GPU pre-loaded with a sleep kernel so Python launch overhead is not timed): the fused
   kernel vs the same maths in PyTorch eager and in torch.compile, plus the achieved fraction
   of the device-to-device copy bandwidth measured in the same run.
4. variants: the same kernel built with other ``CDIQA_MASKING_MIN_BLOCKS`` (tuning data).

Exit status: 0 when every correctness case passed, 1 otherwise, 2 on an internal error.
The non-GPU parts (arguments, cases, inputs, references, tables) import and run without a
GPU; ``--dry-run`` exercises them (tests/kernels/test_loader.py does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a file without PYTHONPATH too
    sys.path.insert(0, str(ROOT))

from cdiqa.masking import masking_stats  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402

PRECISION = {"float32": "fp32", "float16": "fp16"}
#: Builds timed besides the default one (tuning data): name -> macros.
VARIANT_BUILDS = {
    "MIN_BLOCKS=3": {"CDIQA_MASKING_MIN_BLOCKS": 3},
    "MIN_BLOCKS=4": {"CDIQA_MASKING_MIN_BLOCKS": 4},
    "MIN_BLOCKS=6": {"CDIQA_MASKING_MIN_BLOCKS": 6},
}
#: Other tiles-per-block splits timed with the default build, per (B, C, H, W).
VARIANT_SPLITS = {(8, 128, 96, 128): (1, 3, 6), (1, 32, 480, 270): (1, 5, 15)}


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One correctness case: shape, window and input dtype (+ how ``a`` is drawn)."""

    B: int
    C: int
    H: int
    W: int
    k: int
    dtype: str
    wide_range: bool = False  # a spans 1e-3 .. 1e3 (log-uniform)

    @property
    def name(self) -> str:
        tag = " wide-a" if self.wide_range else ""
        return f"{self.B}x{self.C}x{self.H}x{self.W} k={self.k} {self.dtype}{tag}"


def sanitizer_cases() -> list[Case]:
    """Few, small cases covering both paths and pass 2, for compute-sanitizer (slow)."""
    return [Case(2, 3, 1, 1, 7, "float32"), Case(3, 5, 7, 5, 3, "float16"),
            Case(1, 2, 33, 65, 5, "float32"), Case(1, 2, 70, 90, 19, "float16"),
            Case(1, 1, 40, 130, 101, "float32")]


def correctness_cases(quick: bool = False) -> list[Case]:
    """The correctness cases: odd and tiny maps, k = 1..101 (also k > H, W), B to 16, C to 256.

    Tiles are 32 x 32, radii <= 3 take the unrolled path and larger ones the chunked path
    (48 x 48 chunks), so the list crosses every one of those boundaries.
    """
    shapes = [
        ((2, 3, 1, 1), (1, 3, 7)),                # 1 x 1 maps, k > map
        ((3, 5, 7, 5), (1, 3, 5, 7, 9, 15)),      # 7 x 5, k = 9, 15 > both sides
        ((2, 4, 33, 65), (3, 5, 7, 67)),          # odd sizes, tile edges + 1
        ((2, 3, 33, 33), (3,)),
        ((2, 2, 64, 64), (1,)),
        ((4, 6, 70, 90), (9, 19, 41)),            # chunked path: 1 chunk, 2x2, several
        ((1, 3, 40, 130), (101,)),                # k > H, many column chunks
        ((16, 256, 12, 16), (3,)),                # B = 16, C = 256, one tile per plane
        ((16, 256, 2, 2), (3,)),                  # the coarsest scale of a 64 x 64 image
        ((8, 128, 96, 128), (3, 7)),              # the benchmark shape
        ((1, 32, 270, 480), (5,)),
        ((1, 32, 480, 270), (3,)),
        ((1, 2, 192, 256), (1,)),                 # the default model's /2 band at 512 x 384
    ]
    if quick:
        shapes = [s for s in shapes if s[0][0] * s[0][1] * s[0][2] * s[0][3] <= 40_000]
    cases = [Case(*shape, k, dtype) for shape, ks in shapes for k in ks
             for dtype in ("float32", "float16")]
    cases += [Case(2, 8, 45, 77, 5, dtype, wide_range=True) for dtype in ("float32", "float16")]
    return cases


def make_inputs(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Fresh random inputs of ``case``: e, a in its dtype; gamma, sigma float32.

    e ~ N(0, s^2) with 10 % exact zeros (|e|^g = 0 must stay exact), a >= 0 with 10 % zeros,
    gamma in [0.5, 3], sigma in [0.1, 2].
    """
    rng = np.random.default_rng(seed)
    shape = (case.B, case.C, case.H, case.W)
    e = rng.standard_normal(shape) * rng.uniform(0.5, 2.0)
    e[rng.random(shape) < 0.1] = 0.0
    if case.wide_range:
        a = 10.0 ** rng.uniform(-3, 3, shape)
    else:
        a = np.abs(rng.standard_normal(shape)) * rng.uniform(0.1, 3.0)
    a[rng.random(shape) < 0.1] = 0.0
    return {"e": e.astype(case.dtype), "a": a.astype(case.dtype),
            "gamma": rng.uniform(0.5, 3.0, case.C).astype(np.float32),
            "sigma": rng.uniform(0.1, 2.0, case.C).astype(np.float32)}


def reference(inputs: dict[str, np.ndarray], k: int) -> np.ndarray:
    """float64 reference on exactly the given (possibly FP16-rounded) values."""
    return masking_stats(*(inputs[n].astype(np.float64) for n in ("e", "a", "gamma", "sigma")),
                         k, dtype=np.float64)


def rtol_for(dtype: str) -> float:
    """The kernel's tolerance at this input dtype, from cdiqa.tolerances."""
    return tolerance("cuda", PRECISION[dtype]).rtol


def judge(out: np.ndarray, ref: np.ndarray, dtype: str) -> dict[str, Any]:
    """Relative error, finiteness and pass/fail of one output."""
    finite = bool(np.all(np.isfinite(out)))
    err = relative_error(out, ref)
    return {"rel_error": err, "finite": finite, "rtol": rtol_for(dtype),
            "passed": finite and err < rtol_for(dtype)}


# ----------------------------------------------------------------------------- timing plan


@dataclass(frozen=True)
class Bench:
    """One timing configuration."""

    B: int
    C: int
    H: int
    W: int
    k: int
    dtype: str

    @property
    def name(self) -> str:
        return f"{self.B}x{self.C}x{self.H}x{self.W} k={self.k} {self.dtype}"


def timing_plan(quick: bool = False) -> list[Bench]:
    """Timing configurations, most important first (torch.compile has a time budget)."""
    plan = [Bench(8, 128, 96, 128, 3, "float16"), Bench(8, 128, 96, 128, 3, "float32"),
            Bench(1, 32, 480, 270, 3, "float16"), Bench(1, 32, 480, 270, 3, "float32"),
            Bench(16, 256, 48, 64, 3, "float16"), Bench(16, 256, 48, 64, 3, "float32"),
            Bench(8, 128, 96, 128, 7, "float16"), Bench(8, 128, 96, 128, 9, "float16"),
            Bench(1, 2, 192, 256, 1, "float32")]  # the default model (pyramid) /2 band
    return plan[:2] if quick else plan


def op_bytes(b: Bench) -> int:
    """Bytes the fused op must move: e and a read once, stats written."""
    item = 2 if b.dtype == "float16" else 4
    return 2 * b.B * b.C * b.H * b.W * item + b.B * 2 * b.C * 4


def input_sets(set_bytes: int, l2_bytes: int, budget_bytes: int = 8 << 30) -> int:
    """How many input sets to rotate so that their total is >= 3x L2 (3 to 16 sets)."""
    want = max(3, math.ceil(3 * l2_bytes / max(set_bytes, 1)))
    fit = max(1, budget_bytes // max(set_bytes, 1))
    return int(max(1, min(want, 16, fit)))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The final timing table (times in microseconds)."""
    head = (f"{'config':<30} {'fused us':>9} {'eager us':>9} {'compile us':>10} "
            f"{'x eager':>8} {'x compile':>9} {'GB/s':>7} {'% copy BW':>9}")
    lines = [head, "-" * len(head)]

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    for r in rows:
        comp = r.get("compile_us")
        comp_s = num(comp, ".1f") if isinstance(comp, (int, float)) else str(r.get(
            "compile_note", "-"))[:10]
        lines.append(
            f"{r['config']:<30} {num(r.get('fused_us'), '.1f'):>9} "
            f"{num(r.get('eager_us'), '.1f'):>9} {comp_s:>10} "
            f"{num(r.get('speedup_eager'), '.2f'):>8} {num(r.get('speedup_compile'), '.2f'):>9} "
            f"{num(r.get('fused_gbs'), '.0f'):>7} {num(r.get('bw_fraction_pct'), '.1f'):>9}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the check."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"),
                   help="folder for gpu_check.json (default: $OUT or ./gpu_check_out)")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--seed", type=int, default=20260)
    p.add_argument("--quick", action="store_true", help="fewer cases and configurations")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: build, cases and references only (for tests)")
    p.add_argument("--arch", default="sm_90", help="architecture of a --dry-run build")
    p.add_argument("--iters", type=int, default=100, help="timed launches per configuration")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-budget-s", type=float, default=120.0,
                   help="stop compiling new torch.compile configurations after this long")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="skip remaining timing work after this many seconds in total")
    p.add_argument("--no-variants", action="store_true")
    p.add_argument("--sanitize", action="store_true",
                   help="build + a few small cases only, no torch (run under compute-sanitizer);"
                        " writes gpu_check_sanitize.json")
    p.add_argument("--profile", action="store_true",
                   help="build + the benchmark shapes once each, no torch (run under ncu);"
                        " writes gpu_check_profile.json")
    args = p.parse_args(argv)
    if args.iters < 5 or args.warmup < 1:
        p.error("--iters must be >= 5 and --warmup >= 1")
    return args


# ----------------------------------------------------------------------------- results


class Results:
    """The JSON document, rewritten after every section."""

    def __init__(self, out_dir: Path, name: str = "gpu_check.json"):
        self.path = out_dir / name
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "errors": []}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def error(self, section: str, exc: BaseException) -> None:
        tb = traceback.format_exc(limit=6)
        self.data["errors"].append({"section": section, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": tb})
        print(f"!! {section}: {type(exc).__name__}: {exc}", flush=True)

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.path)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- sections


def section_env(res: Results) -> None:
    env: dict[str, Any] = {"python": sys.version.split()[0], "numpy": np.__version__,
                           "platform": platform.platform()}
    for mod in ("torch", "triton", "cupy", "cuda.bindings"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            env[mod] = getattr(m, "__version__", "?")
        except Exception as exc:  # report, never fail on a missing optional package
            env[mod] = f"unavailable ({type(exc).__name__})"
    from cdiqa.kernels import ptx

    nvcc = ptx.find_nvcc()
    env["nvcc"] = f"{nvcc} ({ptx.nvcc_version(nvcc)})" if nvcc else None
    env["nvrtc"] = ptx.nvrtc_version()
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as exc:
        env["nvidia_smi"] = f"unavailable ({type(exc).__name__})"
    res.data["env"] = env
    log(f"env: {json.dumps(env, default=str)}")


def build_info(kernel) -> dict[str, Any]:
    b = kernel.build
    return {"arch": kernel.arch, "driver_version": kernel.driver_version,
            "compiler": b.compiler, "image": kernel.image_kind, "cached": b.cached,
            "entries": b.entry_names, "ptx_version": _ptx_version(b.ptx),
            "resources": {n: asdict(r) for n, r in b.resources.items()}}


def _ptx_version(ptx_text: str) -> str | None:
    for line in ptx_text.splitlines()[:40]:
        if line.startswith(".version"):
            return line.split()[1]
    return None


def section_build(res: Results, args: argparse.Namespace):
    from cdiqa.kernels.loader import MaskingKernel

    kernel = MaskingKernel(args.device, cache=False)
    res.data["build"] = build_info(kernel)
    log(f"build: {json.dumps(res.data['build'])}")
    return kernel


def section_correctness(res: Results, kernel, cases: list[Case], seed: int) -> bool:
    rows, all_ok = [], True
    for i, case in enumerate(cases):
        row: dict[str, Any] = {"case": case.name, "seed": seed + i}
        t = time.perf_counter()
        try:
            inputs = make_inputs(case, seed + i)
            ref = reference(inputs, case.k)
            out1 = kernel.stats(inputs["e"], inputs["a"], inputs["gamma"], inputs["sigma"], case.k)
            out2 = kernel.stats(inputs["e"], inputs["a"], inputs["gamma"], inputs["sigma"], case.k)
            row.update(judge(out1, ref, case.dtype))
            row["deterministic"] = bool(np.array_equal(out1.view(np.uint32), out2.view(np.uint32)))
            row["passed"] = row["passed"] and row["deterministic"]
        except Exception as exc:
            res.error(f"correctness {case.name}", exc)
            row.update(passed=False, error=f"{type(exc).__name__}: {exc}")
        row["seconds"] = round(time.perf_counter() - t, 2)
        all_ok &= row["passed"]
        rows.append(row)
        log(f"  {'ok  ' if row['passed'] else 'FAIL'} {case.name:<36} "
            f"err={row.get('rel_error', float('nan')):.2e} det={row.get('deterministic')}")
    res.data["correctness"] = rows
    n_ok = sum(r["passed"] for r in rows)
    res.data["correctness_summary"] = f"{n_ok}/{len(rows)} passed"
    log(f"correctness: {n_ok}/{len(rows)} passed")
    return all_ok


def make_masking_torch(torch) -> Callable:
    """The op in PyTorch eager ops (FP32 maths), the baseline of the timing.

    A closure over the torch module, so that torch.compile sees no import inside.
    """
    F = torch.nn.functional

    def masking_torch(e, a, gamma, sigma, k: int):
        e, a = e.float(), a.float()
        g = gamma.view(1, -1, 1, 1)
        m = F.avg_pool2d(a, k, stride=1, padding=k // 2, count_include_pad=False)
        n = e.abs().pow(g) / (sigma.view(1, -1, 1, 1).pow(g) + m)
        return torch.stack((n.sum((2, 3)), (n * n).sum((2, 3))), 1)

    return masking_torch


def _gpu_times(torch, fn: Callable[[int], Any], iters: int, cpu_per_call: float) -> list[float]:
    """Per-launch GPU times (us) of fn(i), i = 0..iters-1, with the queue pre-filled.

    A sleep kernel holds the GPU while the CPU enqueues every launch and its events, so the
    events time the GPU work back to back, not Python's launch overhead.
    """
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize()
    hold_s = min(2.0, 1.5 * iters * cpu_per_call + iters * 10e-6 + 2e-3)
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(int(hold_s * 2.0e9))  # cycles at ~2 GHz; longer is harmless
    for i in range(iters):
        starts[i].record()
        fn(i)
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]


def _measure(torch, fn: Callable[[int], Any], iters: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(warmup):
        fn(i)
    cpu = (time.perf_counter() - t) / warmup  # enqueue cost per call (GPU may lag behind)
    torch.cuda.synchronize()
    times = _gpu_times(torch, fn, iters, cpu)
    q = np.percentile(times, [10, 50, 90])
    return {"median_us": float(q[1]), "p10_us": float(q[0]), "p90_us": float(q[2]),
            "cpu_enqueue_us": cpu * 1e6}


def copy_bandwidth(torch, device) -> dict[str, float]:
    """Device-to-device copy rate (bytes read + written per second), the ceiling."""
    free, _ = torch.cuda.mem_get_info(device)
    n = int(min(1 << 30, free // 8)) // 4
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    t = statistics.median(times)
    del src, dst
    torch.cuda.empty_cache()
    return {"bytes": 2 * n * 4, "seconds": t, "gbs": 2 * n * 4 / t / 1e9}


class _Sets:
    """Rotating input sets of one configuration on the GPU (torch tensors)."""

    def __init__(self, torch, b: Bench, n: int, seed: int, device):
        from cdiqa.kernels.loader import workspace_size

        dt = torch.float16 if b.dtype == "float16" else torch.float32
        self.host = []
        self.sets = []
        for j in range(n):
            inp = make_inputs(Case(b.B, b.C, b.H, b.W, b.k, b.dtype), seed + j)
            self.host.append(inp)
            ws_bytes = workspace_size(b.B, b.C, b.H, b.W, 1)  # the most any split needs
            self.sets.append({
                "e": torch.from_numpy(inp["e"]).to(device), "a": torch.from_numpy(inp["a"]).to(device),
                "gamma": torch.from_numpy(inp["gamma"]).to(device),
                "sigma": torch.from_numpy(inp["sigma"]).to(device),
                "stats": torch.full((b.B, 2, b.C), float("nan"), device=device),
                "ws": torch.full((max(ws_bytes // 4, 1),), float("nan"), device=device),
            })
            assert self.sets[-1]["e"].dtype == dt


def bench_one(res: Results, torch, kernel, b: Bench, args, copy_bw: float, device,
              compile_state: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"config": b.name}
    props = torch.cuda.get_device_properties(device)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20) or (50 << 20))
    n_sets = input_sets(op_bytes(b), l2)
    row["input_sets"] = n_sets
    data = _Sets(torch, b, n_sets, args.seed + 1000, device)
    stream = torch.cuda.current_stream(device)
    launches = [kernel.bind(s["e"], s["a"], s["gamma"], s["sigma"], s["stats"], s["ws"],
                            b.B, b.C, b.H, b.W, b.k, dtype=b.dtype, stream=stream.cuda_stream)
                for s in data.sets]
    # correctness of this path (torch memory, torch stream) before timing it
    launches[0]()
    torch.cuda.synchronize()
    ref = reference(data.host[0], b.k)
    out = data.sets[0]["stats"].cpu().numpy()
    row["fused_check"] = judge(out, ref, b.dtype)
    launches[0]()
    torch.cuda.synchronize()
    row["fused_check"]["deterministic"] = bool(np.array_equal(
        out.view(np.uint32), data.sets[0]["stats"].cpu().numpy().view(np.uint32)))
    fused = _measure(torch, lambda i: launches[i % n_sets](), args.iters, args.warmup)
    row["fused"] = fused
    row["fused_us"] = fused["median_us"]
    row["fused_gbs"] = op_bytes(b) / (fused["median_us"] * 1e-6) / 1e9
    row["bw_fraction_pct"] = 100.0 * row["fused_gbs"] / copy_bw if copy_bw else float("nan")

    masking_torch = compile_state["eager"]

    def eager(i):
        s = data.sets[i % n_sets]
        return masking_torch(s["e"], s["a"], s["gamma"], s["sigma"], b.k)

    row["eager_check"] = judge(eager(0).cpu().numpy(), ref, b.dtype)
    ev = _measure(torch, eager, args.iters, args.warmup)
    row["eager"] = ev
    row["eager_us"] = ev["median_us"]
    row["speedup_eager"] = ev["median_us"] / fused["median_us"]

    if args.no_compile:
        row["compile_note"] = "off"
    elif compile_state["spent"] > args.compile_budget_s or res.elapsed() > args.budget_s:
        row["compile_note"] = "budget"
    else:
        t = time.perf_counter()
        try:
            fn = compile_state["fn"]
            first = fn(data.sets[0]["e"], data.sets[0]["a"], data.sets[0]["gamma"],
                       data.sets[0]["sigma"], b.k)
            torch.cuda.synchronize()
            row["compile_seconds"] = time.perf_counter() - t
            row["compile_check"] = judge(first.cpu().numpy(), ref, b.dtype)

            def compiled(i):
                s = data.sets[i % n_sets]
                return fn(s["e"], s["a"], s["gamma"], s["sigma"], b.k)

            cv = _measure(torch, compiled, args.iters, args.warmup)
            row["compile"] = cv
            row["compile_us"] = cv["median_us"]
            row["speedup_compile"] = cv["median_us"] / fused["median_us"]
        except Exception as exc:
            res.error(f"torch.compile {b.name}", exc)
            row["compile_note"] = "failed"
            row["compile_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        compile_state["spent"] += time.perf_counter() - t
    data = launches = None  # free the sets before empty_cache
    torch.cuda.empty_cache()
    return row


def section_timing(res: Results, kernel, args) -> bool:
    import torch

    with torch.no_grad():  # one grad mode throughout: torch.compile guards on it
        return _timing(res, torch, kernel, args)


def _timing(res: Results, torch, kernel, args) -> bool:
    device = torch.device("cuda", args.device)
    torch.cuda.set_device(device)
    props = torch.cuda.get_device_properties(device)
    res.data["device"] = {"name": props.name, "sms": props.multi_processor_count,
                          "memory_gb": props.total_memory / 1e9,
                          "l2_mb": getattr(props, "L2_cache_size", 0) / 1e6}
    bw = copy_bandwidth(torch, device)
    res.data["copy_bandwidth"] = bw
    log(f"copy bandwidth: {bw['gbs']:.0f} GB/s (read + write)")
    eager = make_masking_torch(torch)
    compile_state: dict[str, Any] = {"spent": 0.0, "fn": None, "eager": eager}
    if not args.no_compile:
        try:
            for name in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 64)
            compile_state["fn"] = torch.compile(make_masking_torch(torch), dynamic=False)
        except Exception as exc:
            res.error("torch.compile setup", exc)
            args.no_compile = True
    rows, ok = [], True
    res.data["timing"] = rows
    for b in timing_plan(args.quick):
        if res.elapsed() > args.budget_s:
            rows.append({"config": b.name, "note": "skipped: time budget"})
            continue
        try:
            row = bench_one(res, torch, kernel, b, args, bw["gbs"], device, compile_state)
            ok &= row["fused_check"]["passed"] and row["fused_check"]["deterministic"]
        except Exception as exc:
            res.error(f"timing {b.name}", exc)
            row = {"config": b.name, "note": f"failed: {type(exc).__name__}: {exc}"}
            ok = False
        rows.append(row)
        res.save()
        log(f"  {b.name}: fused {row.get('fused_us', float('nan')):.1f} us, eager "
            f"{row.get('eager_us', float('nan')):.1f} us, compile "
            f"{row.get('compile_us', row.get('compile_note', '-'))}")
    return ok


def section_variants(res: Results, kernel, args) -> None:
    import torch

    with torch.no_grad():
        _variants(res, torch, kernel, args)


def _variants(res: Results, torch, kernel, args) -> None:
    """Other builds (macros) and other tiles-per-block splits, on the same input sets."""
    from cdiqa.kernels.loader import MaskingKernel

    device = torch.device("cuda", args.device)
    out: dict[str, Any] = {"builds": {}, "fused_us": {}, "checks": {}}
    res.data["variants"] = out
    kernels = {"default": kernel}
    for name, defines in VARIANT_BUILDS.items():
        try:
            kv = MaskingKernel(args.device, cache=False, defines=defines)
            out["builds"][name] = build_info(kv)
            kernels[name] = kv
        except Exception as exc:
            res.error(f"variant build {name}", exc)
    l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
    stream = torch.cuda.current_stream(device)
    for b in [b for b in timing_plan(args.quick) if b.k == 3][:4]:
        if res.elapsed() > args.budget_s:
            out["fused_us"][b.name] = "skipped: time budget"
            continue
        try:
            n_sets = input_sets(op_bytes(b), l2)
            data = _Sets(torch, b, n_sets, args.seed + 2000, device)
            ref = reference(data.host[0], b.k)
            runs = [(name, kv, None) for name, kv in kernels.items()]
            runs += [(f"tiles_per_block={t}", kernel, t)
                     for t in VARIANT_SPLITS.get((b.B, b.C, b.H, b.W), ())]
            times = {}
            for name, kv, tpb in runs:
                launches = [kv.bind(s["e"], s["a"], s["gamma"], s["sigma"], s["stats"], s["ws"],
                                    b.B, b.C, b.H, b.W, b.k, dtype=b.dtype,
                                    stream=stream.cuda_stream, tiles_per_block=tpb)
                            for s in data.sets]
                launches[0]()
                torch.cuda.synchronize()
                check = judge(data.sets[0]["stats"].cpu().numpy(), ref, b.dtype)
                out["checks"][f"{b.name} {name}"] = check["passed"]
                m = _measure(torch, lambda i: launches[i % n_sets](), args.iters, args.warmup)
                times[name] = round(m["median_us"], 2)
            out["fused_us"][b.name] = times
            log(f"  variants {b.name}: {times}")
        except Exception as exc:
            res.error(f"variants {b.name}", exc)
        data = None
        torch.cuda.empty_cache()
        res.save()
    for name, kv in kernels.items():
        if kv is not kernel:
            kv.close()


def profile(res: Results, args) -> int:
    """The benchmark shapes once each through the host path: the process to run under ncu."""
    try:
        kernel = section_build(res, args)
        ok = section_correctness(res, kernel, [Case(8, 128, 96, 128, 3, "float16"),
                                               Case(8, 128, 96, 128, 3, "float32"),
                                               Case(1, 32, 480, 270, 3, "float16")], args.seed)
    except Exception as exc:
        res.error("profile", exc)
        ok = False
    res.data["passed"] = bool(ok)
    res.save()
    return 0 if ok else 1


def dry_run(res: Results, args) -> int:
    """No GPU: build PTX for --arch (if a compiler is here), cases and small references."""
    from cdiqa.errors import BackendUnavailable
    from cdiqa.kernels import ptx

    try:
        b = ptx.ptx_from_cuda(args.arch, cache=False)
        res.data["build"] = {"arch": b.arch, "compiler": b.compiler, "entries": b.entry_names,
                             "resources": {n: asdict(r) for n, r in b.resources.items()}}
    except BackendUnavailable as exc:
        res.data["build"] = {"skipped": str(exc)}
    cases = correctness_cases(quick=True)
    rows = []
    for i, case in enumerate(cases):
        inputs = make_inputs(case, args.seed + i)
        ref = reference(inputs, case.k)
        rows.append({"case": case.name, "ref_finite": bool(np.all(np.isfinite(ref)))})
    res.data["cases"] = rows
    res.data["plan"] = [asdict(b) | {"op_bytes": op_bytes(b)} for b in timing_plan(args.quick)]
    fake = [{"config": b.name, "fused_us": 10.0, "eager_us": 50.0, "compile_note": "off",
             "speedup_eager": 5.0, "fused_gbs": op_bytes(b) / 1e-5 / 1e9,
             "bw_fraction_pct": float("nan")} for b in timing_plan(args.quick)]
    res.data["table"] = format_table(fake)
    res.save()
    log(res.data["table"])
    return 0


def sanitize(res: Results, args) -> int:
    """Build and a few small cases, nothing else: the process to run under compute-sanitizer."""
    try:
        kernel = section_build(res, args)
        ok = section_correctness(res, kernel, sanitizer_cases(), args.seed)
    except Exception as exc:
        res.error("sanitize", exc)
        ok = False
    res.data["passed"] = bool(ok)
    res.save()
    log(f"SANITIZE RUN: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = "gpu_check_sanitize.json" if args.sanitize else \
        "gpu_check_profile.json" if args.profile else "gpu_check.json"
    res = Results(Path(args.out), name)
    res.data["args"] = vars(args).copy()
    if args.dry_run:
        return dry_run(res, args)
    # builds go to a private cache: nothing but the JSON lands in --out
    os.environ["CDIQA_CACHE"] = tempfile.mkdtemp(prefix="cdiqa-gpu-check-")
    if args.sanitize:
        return sanitize(res, args)
    if args.profile:
        return profile(res, args)
    ok = True
    try:
        section_env(res)
    except Exception as exc:
        res.error("env", exc)
    res.save()
    kernel = None
    try:
        kernel = section_build(res, args)
    except Exception as exc:
        res.error("build", exc)
        ok = False
    res.save()
    if kernel is not None:
        try:
            ok &= section_correctness(res, kernel, correctness_cases(args.quick), args.seed)
        except Exception as exc:
            res.error("correctness", exc)
            ok = False
        res.save()
        try:
            ok &= section_timing(res, kernel, args)
        except Exception as exc:
            res.error("timing", exc)
        res.save()
        if not args.no_variants:
            try:
                section_variants(res, kernel, args)
            except Exception as exc:
                res.error("variants", exc)
            res.save()
    res.data["passed"] = bool(ok)
    res.save()
    # the short summary last: it is what a truncated log still shows
    log("\n== gpu_check summary ==")
    build = res.data.get("build", {})
    log(f"device: {res.data.get('device', {}).get('name')}  arch: {build.get('arch')}  "
        f"compiler: {build.get('compiler')} ({build.get('image')})  copy BW: "
        f"{res.data.get('copy_bandwidth', {}).get('gbs', float('nan')):.0f} GB/s")
    for name, r in build.get("resources", {}).items():
        log(f"  {name}: {r['registers']} regs, {r['spill_stores']}/{r['spill_loads']} "
            f"spill st/ld bytes, {r['shared_bytes']} B smem")
    for config, times in res.data.get("variants", {}).get("fused_us", {}).items():
        log(f"variants {config}: {times}")
    log(f"errors: {len(res.data['errors'])}  correctness: "
        f"{res.data.get('correctness_summary', 'not run')}")
    failed = [r["case"] for r in res.data.get("correctness", []) if not r["passed"]]
    if failed:
        log(f"FAILED cases: {failed}")
    log(format_table([r for r in res.data.get("timing", []) if "fused_us" in r]))
    log(f"RESULT: {'PASS' if ok else 'FAIL'}  ({res.elapsed():.0f} s)  -> {res.path}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(2)
