"""``iqa-export bench``: PyTorch eager vs ONNX Runtime on one machine, in one run.

The runtime is timed in a child process that never imports torch (``cdiqa.runtime.bench``),
so its peak memory is that of an embedded scorer; torch is timed in this process. Both use the
same thread count and the same timing loop (``cdiqa.runtime.bench.time_calls``): a warm-up
call, then calls until the time budget is spent (at least ``min_calls``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from cdiqa import _lazy
from cdiqa.errors import CdiqaError
from cdiqa.manifest import FILE_CHECKPOINT, FILE_ONNX, load_manifest
from cdiqa.runtime.bench import Case, Timing, peak_rss_mb, random_pairs, time_calls

#: (height, width) of the issue's sizes: 256x256, 512x384, 1920x1080 (W x H)
SIZES = ((256, 256), (384, 512), (1080, 1920))
BATCHES = (1, 8)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long.

    Attributes:
        sizes: (height, width) pairs.
        batches: pairs per call.
        budget_s: seconds of timed calls per case and engine (at least ``min_calls``).
        threads: CPU threads for both engines (None: all cores).
        min_calls: fewest timed calls per case.
    """

    sizes: tuple[tuple[int, int], ...] = SIZES
    batches: tuple[int, ...] = BATCHES
    budget_s: float = 3.0
    threads: int | None = None
    min_calls: int = 3

    @classmethod
    def quick(cls) -> "BenchConfig":
        """A few seconds in all: for tests and smoke runs."""
        return cls(sizes=((96, 128),), batches=(1, 2), budget_s=0.2, min_calls=2)

    def cases(self) -> list[Case]:
        """Every (size, batch) combination."""
        return [Case(h, w, b) for h, w in self.sizes for b in self.batches]


@dataclass(frozen=True)
class GraphCost:
    """Work of one pair at one size, counted on the portable graph as exported.

    Attributes:
        gflop: useful convolution FLOPs (2 x multiply-adds, zero padding channels not counted;
            the rest of the graph is < 1 % of the FLOPs).
        weights_mb: all initializers.
        activations_mb: every intermediate tensor written once and read once.
    """

    gflop: float
    weights_mb: float
    activations_mb: float


@dataclass(frozen=True)
class BenchReport:
    """Timings of both engines, the machine, and the runtime's footprint."""

    machine: dict
    date: str
    bundle: str
    timings: tuple[Timing, ...]
    peak_rss_mb: dict[str, float]
    import_ms: float
    costs: dict[str, GraphCost]
    sgemm_gflops: float

    def gflops(self, t: Timing) -> float:
        """Convolution GFLOP/s that ``t`` achieved."""
        return self.costs[t.case.label].gflop * t.pairs_per_s

    def ratio(self, t: Timing) -> float:
        """Throughput of ``t`` over PyTorch eager's for the same case."""
        base = next(x for x in self.timings if x.case == t.case and x.engine == "torch")
        return t.pairs_per_s / base.pairs_per_s

    def table(self):
        """A rich ``Table``: one row per case and engine, ratio against PyTorch eager."""
        from rich.table import Table

        m = self.machine
        table = Table(title=f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, "
                            f"{self.date}", caption=f"peak RSS MiB {self.peak_rss_mb}; "
                            f"import cdiqa.runtime {self.import_ms:.0f} ms; "
                            f"sgemm {self.sgemm_gflops:.0f} GFLOP/s")
        for col in ("size", "batch", "engine", "pairs/s", "p50 ms", "p99 ms", "vs torch",
                    "conv GFLOP/s"):
            table.add_column(col, justify="right")
        for t in sorted(self.timings, key=lambda t: (t.case.height * t.case.width,
                                                     t.case.batch, t.engine != "torch")):
            table.add_row(t.case.label, str(t.case.batch), t.engine, f"{t.pairs_per_s:.2f}",
                          f"{t.p50_ms:.1f}", f"{t.p99_ms:.1f}", f"{self.ratio(t):.2f}x",
                          f"{self.gflops(t):.0f}")
        return table

    def to_dict(self) -> dict:
        """JSON-friendly form, with the ratios."""
        d = asdict(self)
        for row, t in zip(d["timings"], self.timings):
            row["ratio_vs_torch"] = self.ratio(t)
        return d


def run_bench(bundle: str | os.PathLike | None = None, config: BenchConfig | None = None
              ) -> BenchReport:
    """Measure PyTorch eager and ONNX Runtime on ``bundle`` (None: export the default model
    to a temporary bundle first)."""
    config = config or BenchConfig()
    if bundle is None:
        with tempfile.TemporaryDirectory(prefix="cdiqa-bench-") as tmp:
            from cdiqa.export.bundle import export_bundle

            export_bundle(Path(tmp) / "bundle")
            return run_bench(Path(tmp) / "bundle", config)
    manifest = load_manifest(bundle)
    runtime, runtime_rss = _time_runtime_in_child(str(bundle), config)
    torch_timings = _time_torch(manifest, config)
    costs = {c.label: graph_cost(manifest.path(FILE_ONNX), c.height, c.width)
             for c in config.cases()}
    return BenchReport(machine=machine(config.threads),
                       date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       bundle=str(bundle), timings=tuple(torch_timings + runtime),
                       peak_rss_mb={"onnxruntime": runtime_rss, "torch": peak_rss_mb()},
                       import_ms=runtime_import_ms(), costs=costs,
                       sgemm_gflops=sgemm_gflops(config.threads))


def graph_cost(path: str | os.PathLike, height: int, width: int) -> GraphCost:
    """FLOPs and bytes of one pair of ``height`` x ``width`` through the ONNX graph."""
    import numpy as np

    onnx = _lazy.onnx()
    proto = onnx.load(str(path))
    sizes = {"batch": 1, "height": height, "width": width}
    for value in proto.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(proto.graph.value_info) + list(proto.graph.output)}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    flop = 0.0
    for node in proto.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            w = inits.get(node.input[1])
            if w is None:  # a computed weight (the masking's 1x1 mixing): all of it counts
                cout, cin, *k = shapes[node.input[1]]
            else:  # zero filters and zero input slices (cdiqa.export.fold's padding) do no work
                cout = int(np.any(w != 0, axis=(1, 2, 3)).sum())
                cin = int(np.any(w != 0, axis=(0, 2, 3)).sum())
                k = w.shape[2:]
            flop += 2.0 * cin * np.prod(k) * cout * np.prod(out[2:]) * out[0]
    act = sum(np.prod(s) for s in shapes.values() if s and all(s))
    weights = sum(w.size for w in inits.values())
    return GraphCost(float(flop / 1e9), float(4 * weights / 2**20), float(2 * 4 * act / 2**20))


def sgemm_gflops(threads: int | None, n: int = 2048) -> float:
    """Best of 3 float32 n x n matrix products (torch.mm) in GFLOP/s: the practical peak."""
    import time

    torch = _lazy.torch()
    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _time_torch(manifest, config: BenchConfig) -> list[Timing]:
    from cdiqa.model.network import load_model
    from cdiqa.runtime.preprocess import full_roi

    torch = _lazy.torch()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model = load_model(manifest.path(FILE_CHECKPOINT))
    out = []
    for case in config.cases():
        ref, dist = (torch.from_numpy(x) for x in random_pairs(case))
        roi = torch.from_numpy(full_roi(case.batch, case.height, case.width))

        def call():
            with torch.inference_mode():
                return model(ref, dist, roi)

        out.append(time_calls(call, case, "torch", budget_s=config.budget_s,
                              min_calls=config.min_calls))
    return out


def _time_runtime_in_child(bundle: str, config: BenchConfig) -> tuple[list[Timing], float]:
    spec = {"cases": [asdict(c) for c in config.cases()], "budget_s": config.budget_s,
            "threads": config.threads, "min_calls": config.min_calls}
    proc = subprocess.run([sys.executable, "-m", "cdiqa.runtime.bench", bundle, json.dumps(spec)],
                          capture_output=True, text=True, env=_child_env())
    if proc.returncode != 0:
        raise CdiqaError(f"Runtime benchmark for bundle '{bundle}': got exit code "
                         f"{proc.returncode} ({proc.stderr.strip().splitlines()[-1:]}), "
                         "expected 0. Run `iqa-export check` on the bundle.")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    timings = [Timing(Case(**t.pop("case")), **t) for t in result["timings"]]
    return timings, float(result["peak_rss_mb"])


def _child_env() -> dict:
    """The child sees this cdiqa even when it is not installed (run from a checkout)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def runtime_import_ms(repeats: int = 3) -> float:
    """Fastest of ``repeats`` cold imports of ``cdiqa.runtime`` (``-X importtime``), in ms."""
    best = float("inf")
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cdiqa.runtime"],
                              capture_output=True, text=True, env=_child_env())
        for line in proc.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "cdiqa.runtime":
                best = min(best, int(parts[1]) / 1e3)
    return best


def machine(threads: int | None) -> dict:
    """CPU model, cores and the thread count used."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "numpy"):
        if _lazy.available(name):
            from importlib.metadata import version

            versions[name] = version(name)
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads or os.cpu_count(),
            "versions": versions}
