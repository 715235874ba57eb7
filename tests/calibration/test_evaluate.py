"""The cross-domain benchmark and the bench hook, on the calibrated tiny bundle."""

from __future__ import annotations

import numpy as np

from cdiqa.calibration.evaluate import evaluate_domain, monotone, to_markdown
from cdiqa.calibration.readers import ladder, real_ladder


def test_ladders_are_ordered_and_seeded():
    rng = np.random.default_rng(0)
    refs = [rng.random((64, 64, 3)).astype(np.float32)]
    a, b = ladder(refs, ("GBLUR", "haze")), ladder(refs, ("GBLUR", "haze"))
    assert len(a) == 10 and all(np.array_equal(x, y) for x, y in zip(a.dists, b.dists))
    assert [list(a.levels[s]) for s in a.sequences()] == [[1, 2, 3, 4, 5]] * 2
    assert monotone(a, -a.levels.astype(float)) == 1.0
    assert monotone(a, a.levels.astype(float)) == 0.0


def test_a_kind_through_identity_is_ranked_by_its_distance_from_it():
    """Mean_Shift's level 3 is the reference itself, 1 and 5 are the strongest shifts (darker,
    brighter): the known order is the distance from 3, and the two sides never compare."""
    from cdiqa.calibration.gate import gate

    rng = np.random.default_rng(0)
    lad = ladder([rng.random((64, 64, 3)).astype(np.float32)], ("GBLUR", "Mean_Shift"))
    shift = np.array(lad.kinds) == "Mean_Shift"
    assert list(lad.severity[shift]) == [2, 1, 0, 1, 2]
    assert list(lad.severity[~shift]) == [1, 2, 3, 4, 5]
    perfect = -lad.severity.astype(float)  # a score that falls with the known severity
    perfect[shift] += np.array([0.0, 0.0, 0.0, 0.1, 0.1])  # brighter side: a milder ladder
    assert monotone(lad, perfect) == 1.0
    assert monotone(lad, -lad.levels.astype(float)) == 0.5  # by level: Mean_Shift fails
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
    assert "| underwater" in to_markdown([res])


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
