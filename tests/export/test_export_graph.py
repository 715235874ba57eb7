"""Both exported graph forms: structure, dynamic axes, plugin nodes, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from cdiqa.errors import ConfigError, ShapeError  # noqa: E402
from cdiqa.export.check import check_plugin_nodes  # noqa: E402
from cdiqa.export.graph import check_graph, graph_module, onnx_from_torch  # noqa: E402
from cdiqa.export.plugin import PLUGIN_ONNX_DOMAIN, kernel_contract  # noqa: E402
from cdiqa.export.testing import tiny_model  # noqa: E402
from cdiqa.manifest import (FILE_ONNX, FILE_ONNX_PLUGIN, INPUT_NAMES, OUTPUT_NAMES,  # noqa: E402
                            load_manifest)
from cdiqa.masking import STRIDES  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402


def _load(bundle: Path, key: str):
    return onnx.load(str(load_manifest(bundle).path(key)))


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("key", [FILE_ONNX, FILE_ONNX_PLUGIN])
def test_graph_contract(tiny_bundle: Path, key: str) -> None:
    proto = _load(tiny_bundle, key)
    check_graph(proto)  # checker (full) + strict shape inference
    ins = {v.name: v for v in proto.graph.input}
    outs = {v.name: v for v in proto.graph.output}
    assert tuple(ins) == INPUT_NAMES and tuple(outs) == OUTPUT_NAMES
    for name in ("ref", "dist"):
        assert _dims(ins[name]) == ["batch", 3, "height", "width"]
        assert ins[name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(ins["roi"]) == ["batch", 4]
    assert ins["roi"].type.tensor_type.elem_type == onnx.TensorProto.INT32
    for v in outs.values():
        assert _dims(v) == ["batch", 32]  # D = 4 scales x 8 channels
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(not n.metadata_props for n in proto.graph.node)  # no local stack traces


def test_portable_form_uses_standard_ops_only(tiny_bundle: Path) -> None:
    proto = _load(tiny_bundle, FILE_ONNX)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert ops["AveragePool"] == len(STRIDES)  # P_k, one per scale
    for n in proto.graph.node:
        if n.op_type == "AveragePool":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs.get("count_include_pad", 0) == 0
            assert attrs["kernel_shape"] == [5, 5] and attrs["strides"] == [1, 1]
    assert ops["Div"] > 0 and ops["ReduceSum"] > 0
    # |x|^g as exp(g log|x|) (cdiqa.export.rewrite): |e|^g and |c|^g at each scale
    assert ops["Pow"] == 0 and ops["Log"] == ops["Exp"] == 2 * len(STRIDES)


def test_plugin_form_has_one_node_per_scale(tiny_bundle: Path) -> None:
    manifest = load_manifest(tiny_bundle)
    proto = _load(tiny_bundle, FILE_ONNX_PLUGIN)
    contract = kernel_contract()
    nodes = [n for n in proto.graph.node if n.op_type == contract["name"]]
    assert len(nodes) == len(STRIDES) == manifest.plugin.count
    assert all(n.domain == PLUGIN_ONNX_DOMAIN for n in nodes)
    assert {(o.domain, o.version) for o in proto.opset_import} >= {(PLUGIN_ONNX_DOMAIN, 1)}
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs == {"plugin_namespace": b"cdiqa", "plugin_version": b"1", "k": 5}
        assert len(n.input) == 4 and len(n.output) == 1
    # the masking math is gone from the plugin form: no box filter left
    assert not any(n.op_type == "AveragePool" for n in proto.graph.node)
    assert "plugin_namespace" in check_plugin_nodes(proto, manifest.plugin)


def test_plugin_node_check_names_the_problem(tiny_bundle: Path) -> None:
    manifest = load_manifest(tiny_bundle)
    proto = _load(tiny_bundle, FILE_ONNX_PLUGIN)
    node = next(n for n in proto.graph.node if n.op_type == manifest.plugin.name)
    del node.attribute[:]
    with pytest.raises(ShapeError, match=r"Plugin node for graph .*expected domain "
                                         r"'trt.plugins', 4 inputs"):
        check_plugin_nodes(proto, manifest.plugin)
    proto.graph.node.remove(node)
    with pytest.raises(ShapeError, match=r"Plugin nodes for graph 'CdiqaMasking': got 3, "
                                         r"expected 4"):
        check_plugin_nodes(proto, manifest.plugin)


def test_plugin_module_computes_the_same_stats_eagerly() -> None:
    model = tiny_model()
    ref, dist = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    roi = torch.tensor([[0, 0, 64, 96], [0, 32, 64, 96]], dtype=torch.int32)
    with torch.inference_mode():
        a = graph_module(model, "plugin")(ref, dist, roi)
        b = graph_module(model, "portable")(ref, dist, roi)
    for x, y in zip(a, b):
        assert relative_error(x.numpy(), y.numpy()) <= tolerance("torch").rtol


def test_pow_rewrite_is_exact_and_keeps_zeros() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from cdiqa.export.rewrite import pow_as_exp_log

    g = np.array([1.5, 2.0, 3.3], np.float32).reshape(1, 3, 1)
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Pow", ["a", "g"], ["y"]),
         helper.make_node("Pow", ["x", "g"], ["z"])],  # not of an Abs: left alone
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 5]) for n in ("y", "z")],
        [numpy_helper.from_array(g, "g")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.array([[0, 1e-30, 1e-3, 0.5, 2]] * 3, np.float32)[None]
    before = ort.InferenceSession(proto.SerializeToString()).run(["y"], {"x": x})[0]
    assert pow_as_exp_log(proto) == 1
    check_graph(proto)
    after = ort.InferenceSession(proto.SerializeToString()).run(["y"], {"x": x})[0]
    assert [n.op_type for n in proto.graph.node] == ["Abs", "Log", "Mul", "Exp", "Pow"]
    assert np.all(after[:, :, 0] == 0)  # zeros stay exact zeros
    assert relative_error(after, before) <= tolerance("onnx").rtol


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"Form for export 'form': got 'trt'"):
        onnx_from_torch(object(), "trt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Opset for export 'opset': got 13, expected >= 18"):
        onnx_from_torch(object(), opset=13)


def test_dynamic_shapes_run_on_onnxruntime(tiny_bundle: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(load_manifest(tiny_bundle).path(FILE_ONNX)))
    rng = np.random.default_rng(0)
    for b, h, w in ((1, 64, 64), (3, 100, 70), (2, 161, 97)):
        ref = rng.random((b, 3, h, w), np.float32)
        roi = np.tile(np.array([[0, 0, h, w]], np.int32), (b, 1))
        sums, sumsq, counts = sess.run(None, {"ref": ref, "dist": ref, "roi": roi})
        assert sums.shape == (b, 32) and not sums.any() and not sumsq.any()
        assert counts[0, 0] == -(-h // 4) * -(-w // 4)  # stride-4 map of ceil(h/4) x ceil(w/4)


@pytest.mark.parametrize("h, w", [(64, 96), (77, 50)])
def test_input_scale_exports_as_a_resize_and_runs_like_torch(h: int, w: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    from cdiqa.model.network import CDIQA, ModelConfig, with_input_scale

    torch.manual_seed(0)
    model = with_input_scale(CDIQA(ModelConfig.pyramid()).eval(), 2)
    proto = onnx_from_torch(model, "portable")
    assert Counter(n.op_type for n in proto.graph.node)["Resize"] == 2  # ref and dist
    sess = ort.InferenceSession(proto.SerializeToString())
    rng = np.random.default_rng(1)
    ref = rng.random((1, 3, h, w), np.float32)
    dist = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
    roi = np.array([[0, 0, h // 2, w]], np.int32)  # counts at the scaled strides too
    got = sess.run(None, {"ref": ref, "dist": dist, "roi": roi})
    with torch.no_grad():
        want = model(torch.from_numpy(ref), torch.from_numpy(dist), torch.from_numpy(roi))
    assert np.array_equal(got[2], want.counts.numpy())
    for g, t in zip(got[:2], want[:2]):
        assert relative_error(g, t.numpy()) <= tolerance("onnx").rtol
