"""``iqa-export bench``: PyTorch eager vs ONNX Runtime on one machine, in one run.

Both engines run in this process with the same thread count and are timed interleaved, one
call each in turn (``cdiqa.runtime.bench.time_engines``), so both see the same background
load. The runtime's peak memory is measured in a child process that never imports torch
(``python -m cdiqa.runtime.bench``): what an embedded scorer would need.
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
from typing import Callable

from cdiqa import _lazy
from cdiqa._progress import DONE, Progress, stepper
from cdiqa.errors import CdiqaError
from cdiqa.manifest import (FILE_CHECKPOINT, FILE_ONNX, INPUT_DIST, INPUT_REF, INPUT_ROI,
                            load_manifest)
from cdiqa.runtime.bench import (Case, Timing, case_feed, cpu_model, peak_rss_mb,
                                 runtime_engines, time_engines)

#: (height, width) of the benchmark sizes: 256x256, 512x384, 1920x1080 (W x H)
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
    #: case label ("512x384 b1") -> peak RSS (MiB) of a torch-free process scoring that case
    runtime_peak_mb: dict[str, float]
    #: peak RSS (MiB) of this process (torch and the runtime both loaded)
    process_peak_mb: float
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
                            f"{self.date}", caption=f"runtime peak RSS MiB {self.runtime_peak_mb}; "
                            f"import cdiqa.runtime {self.import_ms:.0f} ms; GFLOP/s: useful "
                            f"convolution work per second (sgemm: {self.sgemm_gflops:.0f})")
        for col in ("size", "batch", "engine", "pairs/s", "p50 ms", "p99 ms", "vs torch",
                    "GFLOP/s"):
            table.add_column(col, justify="left" if col == "engine" else "right",
                             no_wrap=col == "engine")
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


def run_bench(bundle: str | os.PathLike | None = None, config: BenchConfig | None = None,
              progress: Progress | None = None,
              on_rows: Callable[[list[Timing]], None] | None = None) -> BenchReport:
    """Measure PyTorch eager and ONNX Runtime on ``bundle`` (None: export the default model
    to a temporary bundle first).

    Args:
        progress: ``progress(stage, done, total)`` as each step starts (the runtime's memory,
            the graph's cost and the timing of every case, then the machine's references),
            and once at the end (``cdiqa._progress``); without a bundle, the export's steps
            come first ("export: ...", counted on their own).
        on_rows: called with the timings of each case (one per engine) as soon as it is timed.
    """
    config = config or BenchConfig()
    if bundle is None:
        with tempfile.TemporaryDirectory(prefix="cdiqa-bench-") as tmp:
            from cdiqa.export.bundle import export_bundle

            export_bundle(Path(tmp) / "bundle", progress=progress and (
                lambda stage, done, total: progress(f"export: {stage}", done, total)))
            return run_bench(Path(tmp) / "bundle", config, progress, on_rows)
    manifest = load_manifest(bundle)
    cases = config.cases()
    names = {c: f"{c.label} b{c.batch}" for c in cases}
    step = stepper(progress, {f"{kind} {names[c]}": 1 for c in cases
                              for kind in ("memory", "cost", "timing")}
                   | {"sgemm": 1, "import time": 1})
    time_case = _case_timer(manifest, config)
    runtime_peak, costs, timings = {}, {}, []
    for case in cases:
        step(f"memory {names[case]}")
        runtime_peak[names[case]] = _runtime_peak_rss(str(bundle), case, config.threads)
        step(f"cost {names[case]}")
        if case.label not in costs:
            costs[case.label] = graph_cost(manifest.path(FILE_ONNX), case.height, case.width)
        step(f"timing {names[case]}")
        rows = time_case(case)
        timings += rows
        if on_rows is not None:
            on_rows(rows)
    step("sgemm")
    sgemm = sgemm_gflops(config.threads)
    step("import time")
    import_ms = runtime_import_ms()
    step(DONE)
    return BenchReport(machine=machine(config.threads),
                       date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       bundle=str(bundle), timings=tuple(timings),
                       runtime_peak_mb=runtime_peak, process_peak_mb=peak_rss_mb(),
                       import_ms=import_ms, costs=costs, sgemm_gflops=sgemm)


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


def _case_timer(manifest, config: BenchConfig) -> Callable[[Case], list[Timing]]:
    """``time_case(case)``: PyTorch eager and every runtime engine of the bundle, interleaved;
    the model and the sessions are loaded once, here."""
    from cdiqa.model.network import load_model

    torch = _lazy.torch()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model = load_model(manifest.path(FILE_CHECKPOINT))
    engines = runtime_engines(str(manifest.root), config.threads)

    def time_case(case: Case) -> list[Timing]:
        feed = case_feed(case)
        tensors = [torch.from_numpy(feed[k]) for k in (INPUT_REF, INPUT_DIST, INPUT_ROI)]

        def eager():
            with torch.inference_mode():
                return model(*tensors)

        calls = {"torch": eager}
        calls.update({name: (lambda infer=infer: infer(feed)) for name, infer in engines.items()})
        return time_engines(calls, case, budget_s=config.budget_s, min_calls=config.min_calls)

    return time_case


def _runtime_peak_rss(bundle: str, case: Case, threads: int | None) -> float:
    """Peak RSS (MiB) of a torch-free process running ``case`` once on every runtime engine."""
    spec = {"cases": [asdict(case)], "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "cdiqa.runtime.bench", bundle, json.dumps(spec)],
                          capture_output=True, text=True, env=_child_env())
    if proc.returncode != 0:
        raise CdiqaError(f"Runtime benchmark for bundle '{bundle}': got exit code "
                         f"{proc.returncode} ({proc.stderr.strip().splitlines()[-1:]}), "
                         "expected 0. Run `iqa-export check` on the bundle.")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["torch_imported"]:
        # a bug in cdiqa, not in the user's input: not a CdiqaError, so the CLI exits 2
        raise RuntimeError("Runtime benchmark for process 'cdiqa.runtime.bench': got torch "
                           "imported, expected a torch-free runtime. Report this as a bug.")
    return float(result["peak_rss_mb"])


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
    versions = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "numpy"):
        if _lazy.available(name):
            from importlib.metadata import version

            versions[name] = version(name)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads or os.cpu_count(),
            "versions": versions}
