"""The cross-domain benchmark and the bench hook, on the calibrated tiny bundle."""

from __future__ import annotations

import numpy as np

from cdiqa.calibration.evaluate import evaluate_domain, to_markdown
from cdiqa.model.distortions import degradations_for
from cdiqa.model.ladder import ladder, real_ladder


def test_the_gate_ranks_a_kind_through_identity_by_its_severity():
    """A score that falls with Mean_Shift's distance from identity (not with its level)
    passes the gate's ladder check (the order itself: tests/model/test_ladder.py)."""
    from cdiqa.calibration.gate import gate

    rng = np.random.default_rng(0)
    lad = ladder([rng.random((64, 64, 3)).astype(np.float32)], ("GBLUR", "Mean_Shift"))
    perfect = -lad.severity.astype(float)
    result = gate("int8", perfect, perfect, lad.severity)
    assert result.passed and result.srcc_ladder > 0.9


def test_real_ladder_interpolates_the_real_degradation():
    from cdiqa.calibration.domains import domain_samples

    pairs = domain_samples("underwater").real_pairs[:2]
    lad = real_ladder(pairs)
    assert len(lad) == 10 and list(lad.levels[:5]) == [1, 2, 3, 4, 5]
    err = [float(np.abs(d - lad.refs[0]).mean()) for d in lad.dists[:5]]
    assert err == sorted(err) and err[0] > 0


def test_evaluate_domain_rows(calibrated):
    bundle, _ = calibrated
    res = evaluate_domain(bundle, "underwater", threads=1)
    assert {"natural model", "adapted (label-free)", "adapted INT8", "adapted FP16", "PSNR",
            "SSIM", "MS-SSIM", "GMSD"} <= set(res.rows)
    assert res.real_pairs == 11 and res.pairs > 0
    for row in res.rows.values():
        assert -1 <= row.srcc <= 1 and 0 <= row.monotone <= 1 and row.srcc_real is not None
        assert set(row.srcc_per_kind) == set(degradations_for("underwater"))
        assert all(-1 <= v <= 1 for v in row.srcc_per_kind.values())
    psnr = res.rows["PSNR"]
    lines = [x for x in to_markdown([res]).splitlines() if "| PSNR |" in x]
    assert lines[0].split(" | ")[3].strip("*") == f"{psnr.srcc_kind_mean:.3f}"


def test_bench_times_the_reduced_precision_graphs(calibrated):
    from cdiqa.manifest import load_manifest
    from cdiqa.runtime import bench

    bundle, _ = calibrated
    assert bench.reduced_precision_graphs(load_manifest(bundle)) == [("underwater", "int8"),
                                                                     ("underwater", "fp16")]
    engines = bench.runtime_engines(str(bundle), threads=1)
    assert set(engines) == {"onnxruntime", "onnxruntime-int8 (underwater)",
                            "onnxruntime-fp16 (underwater)"}
    feed = bench.case_feed(bench.Case(64, 64, 1))
    outs = [infer(feed) for infer in engines.values()]
    assert all(o["sums"].shape == outs[0]["sums"].shape for o in outs)


def test_eval_domain_cli_json(calibrated):
    import json
    import subprocess
    import sys

    bundle, _ = calibrated
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "eval-domain", str(bundle),
                           "--domain", "screen", "--json", "--threads", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads(proc.stdout)
    assert res["domain"] == "screen" and "natural model" in res["rows"]
    assert "adapted (label-free)" not in res["rows"]  # screen was not calibrated here
