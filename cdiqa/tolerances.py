"""Every numeric tolerance of the project, in one table.

Keyed by (implementation, precision). ``rtol`` is a relative error of the whole tensor,
||out - ref|| / ||ref||, against ``cdiqa.masking`` in float64; ``atol`` is an absolute bound on
a score. Tests never inline a tolerance: they look it up here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Allowed error of one implementation at one precision."""

    rtol: float = 0.0
    atol: float = 0.0


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    # float32 math against float64: a few ulps over sums of ~1e5 terms
    ("numpy", "fp32"): Tolerance(rtol=1e-5),
    ("torch", "fp32"): Tolerance(rtol=1e-5),
    ("onnx", "fp32"): Tolerance(rtol=1e-5),
    ("cuda", "fp32"): Tolerance(rtol=1e-5),
    # fp16 inputs (relative rounding 2**-11 each), fp32 accumulation
    ("cuda", "fp16"): Tolerance(rtol=2e-3),
    # scores: ONNX Runtime vs PyTorch (the same float32 graph, other kernels)
    ("onnx_score", "fp32"): Tolerance(atol=1e-4),
    # served (HTTP server, Triton) vs in-process scores: the same graph in other batch shapes
    ("served_score", "fp32"): Tolerance(atol=1e-4),
    # tiled vs untiled scoring of one image
    ("tiled_score", "fp32"): Tolerance(atol=2e-3),
    # reduced-precision graphs of cdiqa.calibration vs their FP32 graph, on the graph's
    # outputs (sums, sumsq): FP16 encoder with FP32 masking; INT8 Q/DQ encoder
    ("onnx", "fp16"): Tolerance(rtol=2e-2),
    ("onnx", "int8"): Tolerance(rtol=0.25),
    # cdiqa.metrics' HaarPSI / MDSI / VSI vs piq's values on fixed inputs, both float64:
    # ~1e-14 observed; the margin covers other libm, FFT and BLAS builds
    ("metric_reference", "fp64"): Tolerance(atol=1e-9),
}


def tolerance(implementation: str, precision: str = "fp32") -> Tolerance:
    """Look up the tolerance of ``implementation`` at ``precision`` (KeyError if unset)."""
    return TOLERANCES[(implementation, precision)]


def relative_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64 (||ref|| = 0 gives the absolute error)."""
    import numpy as np

    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if not np.all(np.isfinite(out)):
        return float("inf")
    denom = np.linalg.norm(ref)
    diff = np.linalg.norm(out - ref)
    return float(diff / denom) if denom > 0 else float(diff)
