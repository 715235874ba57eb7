"""`iqa-export bench --quick`: both engines measured, ratios, memory, import time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402


def test_quick_bench_json(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(tiny_bundle), "--quick", "--json",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress and rows go to stderr
    rows = {(t["case"]["batch"], t["engine"]): t for t in report["timings"]}
    assert set(rows) == {(b, e) for b in (1, 2) for e in ("torch", "onnxruntime")}
    for t in rows.values():
        assert t["pairs_per_s"] > 0 and 0 < t["p50_ms"] <= t["p99_ms"] and t["calls"] >= 2
        assert t["case"]["height"] == 96 and t["case"]["width"] == 128
    assert rows[(1, "torch")]["ratio_vs_torch"] == 1.0
    assert report["machine"]["threads"] == 1 and report["machine"]["cores"] >= 1
    assert report["runtime_peak_mb"]["128x96 b2"] > 0 and report["import_ms"] > 0
    assert report["costs"]["128x96"]["gflop"] > 0 and report["sgemm_gflops"] > 0


def test_progress_and_rows_as_each_case_finishes(tiny_bundle: Path) -> None:
    from cdiqa.export.bench import BenchConfig, run_bench

    events = []
    config = BenchConfig(sizes=((64, 64),), batches=(1, 2), budget_s=0.0, min_calls=1,
                         threads=1)
    report = run_bench(tiny_bundle, config, progress=lambda *a: events.append(("step", *a)),
                       on_rows=lambda rows: events.append(("rows", rows)))
    steps = [e[1:] for e in events if e[0] == "step"]
    total = 3 * 2 + 2  # memory, cost and timing of 2 cases; sgemm; import time
    assert {n for _, _, n in steps} == {total}
    done = [d for _, d, _ in steps]
    assert done == sorted(done) and done[0] == 0 and steps[-1] == ("done", total, total)
    rows = [e[1] for e in events if e[0] == "rows"]
    assert [[(t.case.batch, t.engine) for t in r] for r in rows] == [
        [(1, "torch"), (1, "onnxruntime")], [(2, "torch"), (2, "onnxruntime")]]
    # each case's rows come right after its timing step, before the next case starts
    kinds = [e[1].split(" ")[0] if e[0] == "step" else "rows" for e in events]
    assert kinds == ["memory", "cost", "timing", "rows"] * 2 + ["sgemm", "import", "done"]
    assert list(report.timings) == rows[0] + rows[1]


def test_graph_cost_counts_useful_convolution_work(tiny_bundle: Path) -> None:
    from cdiqa.export.bench import graph_cost
    from cdiqa.manifest import FILE_ONNX, load_manifest

    cost = graph_cost(load_manifest(tiny_bundle).path(FILE_ONNX), 64, 64)
    # by hand, per image: front 3->9 3x3 at 64x64, stem 9->8 3x3/2 at 32x32, 4 stages of
    # (8->8 3x3/2 + 8->8 3x3) at 16, 8, 4 and 2 px square
    per_image = 2 * (27 * 9 * 64 * 64 + 81 * 8 * 32 * 32 + 2 * 72 * 8 * (256 + 64 + 16 + 4))
    # 1x1 8->8 convs at every scale: content heads (ref), degradation heads (ref and dist),
    # the activity mixing (ref)
    one_by_one = 2 * 8 * 8 * (256 + 64 + 16 + 4)
    assert cost.gflop * 1e9 == pytest.approx(2 * per_image + 4 * one_by_one)


def test_quick_bench_table(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(tiny_bundle), "--quick", "--threads", "1",
                                      "--budget", "0.05"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.stdout and "pairs/s" in result.stdout
    # rows as each case finishes, and the bar's last state (rich draws it once off a terminal)
    streamed = [line.split() for line in result.stderr.splitlines() if "pairs/s" in line]
    assert [(r[0], r[1], r[2]) for r in streamed] == [
        ("128x96", f"b{b}", e) for b in (1, 2) for e in ("torch", "onnxruntime")]
    assert "bench: done" in result.stderr and "8/8" in result.stderr
