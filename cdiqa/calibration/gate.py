"""Accuracy gates: a reduced-precision graph against the FP32 one, on held-out pairs.

For each precision (INT8, FP16) of a domain, on the held-out ladder (references that neither
adaptation nor INT8 calibration saw), through the runtime itself (``Scorer.load(bundle,
domain=..., precision=...)``, ONNX Runtime CPU):

    srcc_vs_fp32        SRCC(scores, FP32 scores)
    mean_abs_diff       mean |score - FP32 score|
    srcc_ladder         SRCC(scores, -severity): agreement with the known severity order
    passed              1 - srcc_vs_fp32 <= max_drop  and  srcc_ladder_fp32 - srcc_ladder <= max_drop

A gate that fails raises ``CalibrationError`` unless the drop is accepted (``--accept-drop``).
"""

from __future__ import annotations

import os

import numpy as np

from cdiqa.errors import CalibrationError
from cdiqa.manifest import GateResult
from cdiqa.model.ladder import Ladder

#: largest SRCC drop a reduced-precision graph may show without ``--accept-drop``
MAX_DROP = 0.01


def runtime_scores(bundle: str | os.PathLike, domain: str, precision: str, pairs,
                   threads: int | None = None) -> np.ndarray:
    """Scores of (ref, dist) float32 pairs by the bundle's runtime at ``precision``."""
    from cdiqa.runtime import Scorer, SessionOptions

    with Scorer.load(bundle, backend="onnxruntime", domain=domain, precision=precision,
                     options=SessionOptions(threads=threads), verify=False) as scorer:
        return scorer.score_pairs(list(pairs))


def gate(precision: str, scores: np.ndarray, fp32: np.ndarray, severity: np.ndarray,
         max_drop: float = MAX_DROP, accept: bool = False) -> GateResult:
    """The gate of one precision from its scores and the FP32 scores of the same pairs;
    ``severity``: the pairs' known severity ranks (``Ladder.severity``, not the levels)."""
    from cdiqa.metrics import srcc

    vs = float(srcc(scores, fp32))
    lad, lad32 = float(srcc(scores, -severity)), float(srcc(fp32, -severity))
    passed = bool((1 - vs) <= max_drop and (lad32 - lad) <= max_drop)
    return GateResult(precision=precision, pairs=int(len(scores)), srcc_vs_fp32=vs,
                      mean_abs_diff=float(np.mean(np.abs(scores - fp32))), srcc_ladder=lad,
                      srcc_ladder_fp32=lad32, max_drop=float(max_drop), passed=passed,
                      accepted=passed or bool(accept))


def run_gates(bundle: str | os.PathLike, domain: str, precisions, held_out: Ladder, *,
              max_drop: float = MAX_DROP, accept: bool = False,
              threads: int | None = None) -> dict[str, GateResult]:
    """Gates of every precision of ``domain`` in ``bundle`` on the held-out ladder."""
    pairs = held_out.pairs()
    fp32 = runtime_scores(bundle, domain, "fp32", pairs, threads)
    return {p: gate(p, runtime_scores(bundle, domain, p, pairs, threads), fp32,
                    held_out.severity, max_drop, accept) for p in precisions}


def check_gates(domain: str, gates: dict[str, GateResult]) -> None:
    """Raise ``CalibrationError`` naming the first gate that failed and was not accepted."""
    for p, g in gates.items():
        if not g.accepted:
            raise CalibrationError(
                f"Accuracy gate for domain '{domain}' ({p}): got SRCC vs FP32 "
                f"{g.srcc_vs_fp32:.4f} and ladder SRCC {g.srcc_ladder:.4f} (FP32 "
                f"{g.srcc_ladder_fp32:.4f}), expected drops <= {g.max_drop}. The bundle was "
                "left unchanged; give more --images, try another --method, or pass "
                "--accept-drop to keep the model anyway.")


def describe_gate(g: GateResult) -> str:
    """One line for the CLI."""
    state = "pass" if g.passed else ("FAIL (accepted)" if g.accepted else "FAIL")
    return (f"{g.precision}: SRCC vs FP32 {g.srcc_vs_fp32:.4f}, mean |diff| "
            f"{g.mean_abs_diff:.4f}, ladder SRCC {g.srcc_ladder:.4f} (FP32 "
            f"{g.srcc_ladder_fp32:.4f}) on {g.pairs} held-out pairs: {state}")
