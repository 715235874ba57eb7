"""INT8 graphs in explicit-quantization (Q/DQ) form, from a calibration cache.

::

    ref/dist ─► front end (fp32) ─► Q/DQ ─► [stem + stage-1 Conv, int8 weights per channel,
                int8 symmetric activations] ─► stages 2-4 (fp32) ─► heads c, d (fp32)
                ─► masking, Σ (fp32)

What is quantized, and why only that:

- the encoder's high-resolution Conv nodes after the fixed front end (stem and first stage,
  ``INT8_LAYERS``: most of the pixels); weights symmetric int8 per output channel,
  activations symmetric int8 (zero point 0), the form TensorRT 10/11 accept for explicit
  quantization;
- kept in FP32 as too sensitive: the deeper stages (see ``INT8_LAYERS`` for the measurements);
- kept in FP32 (``nodes_to_exclude``): the front end (its input is the image; 127 levels of
  symmetric int8 over [0, 1] are coarser than the 8-bit image itself), the content and
  degradation heads and the activity mixing (e = d(D) - d(R) is a small difference of
  large codes), and every op of the masking subgraph (Sub, Abs, Pow, AveragePool, Div, Mul,
  ReduceSum and the final reductions are not in ``op_types_to_quantize`` at all).

``qdq_from_cache`` needs no image: the ranges come from the cache (``calibration/<domain>.cache``
in the bundle), so a rebuild (another ONNX Runtime, a changed exclusion list) is offline.
NVIDIA ModelOpt's ONNX quantizer is the alternative (``quantizer="modelopt"``); it calibrates
itself from the images, so it has no cache-only rebuild.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from cdiqa import _lazy
from cdiqa.calibration.methods import CalibrationCache, quiet
from cdiqa.errors import BackendUnavailable, CalibrationError, describe

QUANTIZERS = ("onnxruntime", "modelopt")


#: encoder layers that run in INT8 (weight-name prefixes): the stem (stride 2) and stage 1
#: (stride 4), where most pixels are. Measured on the default model (natural held-out ladder,
#: SRCC of INT8 scores vs FP32 / mean |diff|): stem + stage 1: 0.998 / 0.04; + stage 2:
#: 0.984 / 0.30; every stage: 0.62 / 0.47. The deep stages carry the small differences
#: between reference and distorted codes that the score is made of; their quantization
#: noise is as large as a mild distortion.
INT8_LAYERS = ("model.encoder.stem.", "model.encoder.stages.0.")


def quantized_nodes(proto, layers: tuple[str, ...] = INT8_LAYERS) -> list[str]:
    """The Conv nodes that run in INT8: the encoder's ``layers`` (never the fixed front end,
    the Conv fed by a graph input)."""
    inputs = {i.name for i in proto.graph.input}
    return [n.name for n in proto.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and n.input[1].startswith(layers)
            and n.input[0] not in inputs]


def excluded_nodes(proto) -> list[str]:
    """Every node that stays in higher precision (all but ``quantized_nodes``)."""
    keep = set(quantized_nodes(proto))
    return [n.name for n in proto.graph.node if n.name not in keep]


def qdq_from_cache(graph: str | os.PathLike, cache: CalibrationCache, out: str | os.PathLike
                   ) -> Path:
    """Write the Q/DQ INT8 version of the FP32 ``graph`` to ``out`` from ``cache``'s ranges.

    Raises:
        CalibrationError: the cache was collected on another graph (sha256 mismatch) or lacks
            the range of a tensor to quantize.
    """
    from cdiqa.files import atomic_write
    from cdiqa.manifest import sha256_file

    onnx = _lazy.onnx()
    q = _lazy.lazy_import("onnxruntime.quantization", purpose="INT8 models")
    sha = sha256_file(graph)
    if sha != cache.graph_sha256:
        raise CalibrationError(describe("Graph", "calibration cache", cache.domain,
                                        f"ranges of graph {cache.graph_sha256[:12]}…",
                                        f"ranges of {Path(graph).name} ({sha[:12]}…)",
                                        "Recalibrate the domain with its images"))
    proto = onnx.load(str(graph))
    nodes = quantized_nodes(proto)
    if not nodes:
        # The pyramid (ModelConfig.pyramid) has no learned high-resolution Conv: its only
        # convolutions are the fixed colour and gradient filters on the image, which stay FP32
        # like every front end. ONNX Runtime reads an empty nodes_to_quantize as "all nodes",
        # which would quantize the content and degradation heads, so the INT8 graph is the
        # FP32 graph (the gate then compares identical scores).
        return atomic_write(out, lambda f: f.write(Path(graph).read_bytes()))
    cache = tied(proto, cache)
    needed = {t for n in proto.graph.node if n.name in nodes for t in (n.input[0], n.output[0])}
    missing = sorted(needed - set(cache.ranges))
    if missing:
        raise CalibrationError(describe("Ranges", "calibration cache", cache.domain,
                                        f"none for {missing[:3]}", "every quantized tensor",
                                        "Recalibrate the domain with its images"))
    with tempfile.TemporaryDirectory(prefix="cdiqa-qdq-") as tmp:
        ort_cache = Path(tmp) / "ranges.json"
        q.calibrate.save_tensors_data(cache.tensors_data(), ort_cache)
        with quiet():
            q.quantize_static(
                str(graph), str(out), calibration_data_reader=None,
                calibration_cache_path=str(ort_cache), quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=["Conv"], nodes_to_quantize=nodes, per_channel=True,
                activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    # the encoder's Relu nodes sit inside the INT8 chain (DQ -> Conv -> Q -> DQ -> Relu -> Q):
    # only the FP32 heads are rewired to the original tensors
    _tidy(Path(out), set(nodes) | {n.name for n in proto.graph.node if n.op_type == "Relu"})
    return Path(out)


def twins(proto) -> list[tuple[str, str]]:
    """Pairs of tensors that the reference and the distorted branch compute with the same
    weights: the inputs and outputs of Conv nodes sharing a weight, and the Relu after them."""
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_weight: dict[str, list] = {}
    for n in proto.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            by_weight.setdefault(n.input[1], []).append(n)
    out = []
    for convs in by_weight.values():
        for a, b in zip(convs, convs[1:]):
            out += [(a.input[0], b.input[0]), (a.output[0], b.output[0])]
            ra = [c for c in consumers.get(a.output[0], []) if c.op_type == "Relu"]
            rb = [c for c in consumers.get(b.output[0], []) if c.op_type == "Relu"]
            out += [(x.output[0], y.output[0]) for x, y in zip(ra, rb)]
    return out


def tied(proto, cache: CalibrationCache) -> CalibrationCache:
    """``cache`` with each twin pair given the union of its two ranges.

    Full reference needs the reference and the distorted image quantized *identically*:
    calibrated separately, the two branches get different scales (distorted images have
    other statistics), identical images then give e != 0 and a score below 1.0, and every
    mild distortion drowns in the scale mismatch. One scale per layer, shared by both
    branches, keeps v = 0 exactly for identical images, as in FP32.
    """
    from dataclasses import replace

    ranges = dict(cache.ranges)
    for a, b in twins(proto):
        if a in ranges and b in ranges:
            lo, hi = min(ranges[a][0], ranges[b][0]), max(ranges[a][1], ranges[b][1])
            ranges[a] = ranges[b] = (lo, hi)
    return replace(cache, ranges=ranges)


def float_consumers(proto, quantized: set[str]) -> int:
    """Let the FP32 nodes read a quantized tensor's FP32 original, not its Q/DQ copy.

    The quantizer gives every consumer of a quantized activation the DequantizeLinear
    output. A stage's output feeds both the next stage (INT8) and the FP32 heads, so that DQ
    has two consumers, and ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv only when the
    DQ feeds the Conv alone: 6 of the 18 encoder convolutions stayed FP32 with dequantized
    weights (INT8 no faster than FP32 at 512x384). Rewired, all 18 fuse, and the heads also
    stop seeing quantization error they never needed. Returns the number of inputs rewired.
    """
    producer = {o: n for n in proto.graph.node for o in n.output}
    count = 0
    for node in proto.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                count += 1
    return count


def _tidy(path: Path, quantized: set[str]) -> None:
    """Rewire FP32 consumers, drop dead Q/DQ nodes, name the graph and check it."""
    onnx = _lazy.onnx()
    proto = onnx.load(str(path))
    float_consumers(proto, quantized)
    _prune(proto)
    proto.doc_string = "cdiqa masking statistics, INT8 Q/DQ (explicit quantization)"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _prune(proto) -> None:
    """Remove nodes whose outputs nothing reads (Q/DQ pairs left without a consumer)."""
    graph = proto.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def qdq_with_modelopt(graph: str | os.PathLike, reader: Iterable[Mapping[str, np.ndarray]],
                      method: str, out: str | os.PathLike) -> Path:
    """INT8 Q/DQ with NVIDIA ModelOpt's ONNX quantizer (``modelopt.onnx.quantization``).

    Raises:
        BackendUnavailable: ModelOpt is not installed (``pip install nvidia-modelopt[onnx]``).
    """
    try:
        mq = __import__("modelopt.onnx.quantization", fromlist=["quantize"])
    except ImportError:
        raise BackendUnavailable("INT8 quantizer 'modelopt' needs NVIDIA ModelOpt "
                                 "('modelopt.onnx.quantization' is not installed); install "
                                 "'nvidia-modelopt[onnx]' or use --quantizer onnxruntime.") \
            from None
    onnx = _lazy.onnx()
    feeds = list(reader)
    if not feeds:
        raise CalibrationError("Feeds for quantizer 'modelopt': got 0, expected at least one. "
                               "Give the domain some images.")
    data = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    proto = onnx.load(str(graph))
    mq.quantize(str(graph), quantize_mode="int8", calibration_data=data,
                calibration_method={"minmax": "max"}.get(method, method),
                nodes_to_exclude=excluded_nodes(proto), output_path=str(out))
    return Path(out)
