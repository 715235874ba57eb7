"""FP16 conversion, INT8 ranges, the cache and the Q/DQ graph, on the tiny model's graph."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from cdiqa.calibration.fp16 import FP16_STAGES, encoder_nodes, fp16_from_fp32, fp16_nodes
from cdiqa.calibration.int8 import qdq_from_cache, quantized_nodes
from cdiqa.calibration.methods import METHODS, CalibrationCache, collect_ranges, method_named
from cdiqa.calibration.readers import DomainReader
from cdiqa.errors import CalibrationError, ConfigError
from cdiqa.manifest import FILE_ONNX, load_manifest
from cdiqa.tolerances import relative_error, tolerance

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def graph(base_bundle):
    return load_manifest(base_bundle).path(FILE_ONNX)


def _reader(n=4):
    rng = np.random.default_rng(0)
    refs = [rng.random((80, 96, 3)).astype(np.float32) for _ in range(2)]
    return DomainReader("medical", refs, ("GBLUR", "poisson_gaussian"), count=n, size=64)


def _run(path, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _feed():
    return next(iter(DomainReader("medical", [np.random.default_rng(3).random(
        (96, 96, 3)).astype(np.float32)], ("GBLUR",), count=1, size=96, seed=3)))


@pytest.fixture(scope="module")
def cache(graph):
    return collect_ranges(graph, _reader(), "minmax")


def test_fp16_graph_is_strongly_typed_and_close(graph, tmp_path):
    proto = onnx.load(str(graph))
    half = fp16_from_fp32(proto)
    out = tmp_path / "fp16.onnx"
    onnx.save(half, out)
    io = [t.type.tensor_type.elem_type for t in list(half.graph.input) + list(half.graph.output)]
    assert onnx.TensorProto.FLOAT16 not in io  # inputs and outputs stay FP32
    convs = {n.name: n for n in half.graph.node if n.op_type == "Conv"}
    inits = {t.name: t.data_type for t in half.graph.initializer}
    enc = fp16_nodes(proto)
    for name, node in convs.items():
        want = onnx.TensorProto.FLOAT16 if name in enc else onnx.TensorProto.FLOAT
        assert inits.get(node.input[1], want) == want, name
    masking = [n for n in half.graph.node if n.op_type in ("Pow", "AveragePool", "ReduceSum")]
    types = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    assert all(types.get(n.output[0], 1) == onnx.TensorProto.FLOAT for n in masking)
    feed = _feed()
    ref, got = _run(graph, feed), _run(out, feed)
    for a, b in zip(got[:2], ref[:2]):
        assert relative_error(a, b) <= tolerance("onnx", "fp16").rtol


def test_fp16_covers_the_high_resolution_stages_only(graph):
    proto = onnx.load(str(graph))
    half, enc = fp16_nodes(proto), encoder_nodes(proto)
    weights = {n.name: n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    assert half < enc
    for name in enc:
        if name in weights:
            late = any(f"encoder.stages.{i}." in weights[name] for i in range(FP16_STAGES, 9))
            assert (name in half) is not late, weights[name]


def test_identical_pair_gives_zero_in_every_precision(graph, cache, tmp_path):
    onnx.save(fp16_from_fp32(onnx.load(str(graph))), tmp_path / "h.onnx")
    qdq_from_cache(graph, cache, tmp_path / "q.onnx")
    feed = dict(_feed())
    feed["dist"] = feed["ref"].copy()
    for p in ("h.onnx", "q.onnx"):
        sums = _run(tmp_path / p, feed)[0]
        assert np.all(sums == 0), p


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_give_finite_ranges(graph, name):
    from dataclasses import replace

    method = METHODS[name]
    if hasattr(method, "num_bins"):  # fewer bins: the entropy search is slow in Python
        method = replace(method, num_bins=256)
    c = collect_ranges(graph, _reader(3), method)
    assert c.method == name and c.feeds == 3 and c.domain == "medical"
    assert c.ranges and all(np.isfinite(v).all() and v[0] <= v[1] for v in c.ranges.values())


def test_unknown_method_names_the_choices():
    with pytest.raises(ConfigError, match=r"got 'entropi'.*Did you mean 'entropy'"):
        method_named("entropi")


@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_references_of_different_sizes_give_feeds_of_one_shape(graph, method):
    rng = np.random.default_rng(1)
    refs = [rng.random(shape).astype(np.float32) for shape in ((96, 120, 3), (70, 66, 3))]
    reader = DomainReader("medical", refs, ("GBLUR",), count=6, size=80, seed=2)
    shapes = {feed["ref"].shape for feed in reader}
    assert shapes == {(1, 3, 66, 66)}  # the smallest side, not 80, for every feed
    cache = collect_ranges(graph, reader, method)  # histograms stack the feeds: one shape
    assert all(np.isfinite(r).all() for r in cache.ranges.values())


def test_empty_reader_is_an_error(graph):
    with pytest.raises(CalibrationError, match="Feeds for calibration reader 'medical': got 0"):
        collect_ranges(graph, _reader(0), "minmax")


def test_cache_round_trip(cache, tmp_path):
    path = cache.save(tmp_path / "medical.cache")
    again = CalibrationCache.load(path)
    assert again.to_json() == cache.to_json()
    (tmp_path / "bad.cache").write_text('{"format": "other"}')
    with pytest.raises(CalibrationError, match="Cache format for file .*got other"):
        CalibrationCache.load(tmp_path / "bad.cache")


def test_qdq_graph_structure(graph, cache, tmp_path):
    out = qdq_from_cache(graph, cache, tmp_path / "q.onnx")
    q = onnx.load(str(out))
    producer = {o: n for n in q.graph.node for o in n.output}
    quant = set(quantized_nodes(onnx.load(str(graph))))
    for node in q.graph.node:
        dq_in = [producer[i] for i in node.input if i in producer
                 and producer[i].op_type == "DequantizeLinear"]
        if node.op_type == "Conv":
            assert bool(dq_in) == (node.name in quant), node.name  # only encoder convs
        elif node.op_type in ("Pow", "AveragePool", "Div", "ReduceSum", "Sub", "Abs", "Mul"):
            assert not dq_in, f"{node.op_type} {node.name} reads an INT8 tensor"
    for node in q.graph.node:
        if node.op_type == "QuantizeLinear":  # symmetric activations: zero point 0
            zp = next(t for t in q.graph.initializer if t.name == node.input[2])
            assert not onnx.numpy_helper.to_array(zp).any()
    per_channel = [n for n in q.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel  # weights per output channel
    # a rebuild from the same cache is byte-identical: no images needed
    again = qdq_from_cache(graph, cache, tmp_path / "q2.onnx")
    assert again.read_bytes() == out.read_bytes()


def test_qdq_fuses_every_encoder_conv_on_onnxruntime(graph, cache, tmp_path):
    qdq_from_cache(graph, cache, tmp_path / "q.onnx")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == len(quantized_nodes(onnx.load(str(graph))))
    feed = _feed()
    got, ref = _run(tmp_path / "q.onnx", feed), _run(graph, feed)
    assert relative_error(got[0], ref[0]) <= tolerance("onnx", "int8").rtol


def test_cache_of_another_graph_is_refused(graph, cache, tmp_path):
    from dataclasses import replace

    with pytest.raises(CalibrationError, match="Graph for calibration cache 'medical'"):
        qdq_from_cache(graph, replace(cache, graph_sha256="0" * 64), tmp_path / "q.onnx")


def test_modelopt_absent_is_a_clear_error(graph, tmp_path):
    import importlib.util

    from cdiqa.calibration.int8 import qdq_with_modelopt
    from cdiqa.errors import BackendUnavailable

    if importlib.util.find_spec("modelopt") is not None:
        pytest.skip("NVIDIA ModelOpt is installed here")
    with pytest.raises(BackendUnavailable, match=r"'modelopt' needs NVIDIA ModelOpt.*"
                                                 r"nvidia-modelopt\[onnx\]"):
        qdq_with_modelopt(graph, _reader(1), "minmax", tmp_path / "q.onnx")


def test_pyramid_has_no_int8_layer_and_its_int8_graph_is_the_fp32_graph(tmp_path):
    """The default model's only convolutions are fixed filters on the image: nothing to
    quantize, and ONNX Runtime must not be left to read an empty node list as "all nodes"."""
    from cdiqa.manifest import DEFAULT_BUNDLE, sha256_file

    graph = load_manifest(DEFAULT_BUNDLE).path(FILE_ONNX)
    assert quantized_nodes(onnx.load(str(graph))) == []
    cache = CalibrationCache("natural", "minmax", sha256_file(graph), {})
    out = qdq_from_cache(graph, cache, tmp_path / "int8.onnx")
    assert out.read_bytes() == graph.read_bytes()
