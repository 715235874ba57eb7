"""FP32 -> FP16 ONNX: the encoder in half precision, the masking statistics in single.

The conversion is done here with onnx helpers (no onnxconverter-common): which nodes run in
FP16 is a decision about this network, not a generic block list::

    ref/dist (fp32) ─► Cast ─► [front end, stem, stages 1-2: Conv, Relu, fp16] ─► Cast ─►
          stages 3-4 (fp32) ─► heads c, d (fp32)
                                  │
          sums, sumsq, counts (fp32) ◄── masking: d(D)-d(R), |e|^γ, P_k(a), Σ (fp32) ◄┘

Why the heads and the last two stages stay FP32: e = d(D) - d(R) is a small difference of
two large, nearly equal codes. FP16 keeps 11 significant bits and rounds the two codes
independently, so where e is small against the codes (the coarse scales) it becomes mostly
rounding noise. Measured on the adapted medical profile (relative error of the per-scale
sums against FP32, 20 held-out pairs): the whole encoder in FP16 gave 1e-4, 4e-3, 0.23,
0.26 at scales 1-4 (the FP16 gate then failed: mean |score diff| 0.30); FP16 through stage
2 only gives 1e-4, 4e-3, 5e-3, 6e-3. The high-resolution layers, where the time goes, stay
FP16; stages 3-4 run at 1/16 and 1/64 of the pixels.

The result is *strongly typed*: every tensor has one declared type, and every change of
precision is an explicit ``Cast`` node, so TensorRT's strongly typed mode and ONNX Runtime
run exactly the precisions written in the graph.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cdiqa import _lazy

#: ops that run in FP16 when ``fp16_nodes`` selects them (the encoder's)
FP16_OPS = ("Conv", "Relu")
#: encoder stages (after the front end and stem) that compute in FP16; see the module doc
FP16_STAGES = 2


def encoder_nodes(proto, layers: tuple[str, ...] = ("encoder",)) -> set[str]:
    """Names of the nodes of the encoder φ: its Conv nodes whose weight name contains one of
    ``layers`` (default: every ``...encoder...`` weight) and the Relu nodes that follow them.
    Head, decoder and masking nodes are not included."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    out = set()
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 \
                and any(k in node.input[1] for k in layers):
            out.add(node.name)
        elif node.op_type == "Relu" and node.input[0] in producer \
                and producer[node.input[0]].name in out:
            out.add(node.name)
    return out


def fp16_nodes(proto, stages: int = FP16_STAGES) -> set[str]:
    """The encoder nodes that compute in FP16: front end, stem and the first ``stages``
    stages (their Conv weights named ``encoder.front``, ``encoder.stem``,
    ``encoder.stages.<i>.`` with i < stages), with the Relu nodes that follow them."""
    return encoder_nodes(proto, ("encoder.front", "encoder.stem")
                         + tuple(f"encoder.stages.{i}." for i in range(stages)))


def fp16_from_fp32(proto, select: Callable[[object], set[str]] = fp16_nodes):
    """A copy of ``proto`` where the nodes ``select(proto)`` names compute in FP16.

    Their float initializers become FP16 copies; a ``Cast`` is inserted on every edge that
    crosses between the FP16 and FP32 parts (one per tensor, shared by all its consumers).
    Graph inputs and outputs keep their FP32 types. The copy passes ``onnx.checker``.
    """
    onnx = _lazy.onnx()
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    half = select(model)
    inits = {t.name: t for t in graph.initializer}
    fp16_of: dict[str, str] = {}   # fp32 tensor -> its fp16 version
    fp32_of: dict[str, str] = {}   # fp16 tensor -> its fp32 version
    half_tensors: set[str] = set()
    new_nodes, new_inits = [], []

    def cast(name: str, to: int, table: dict[str, str], suffix: str) -> str:
        if name not in table:
            out = f"{name}{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"cast_{out}", to=to))
            table[name] = out
        return table[name]

    for node in graph.node:
        if node.name in half:
            for i, name in enumerate(node.input):
                if not name or name in half_tensors:
                    continue
                if name in inits and inits[name].data_type == TensorProto.FLOAT:
                    if name not in fp16_of:
                        arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                        new_inits.append(numpy_helper.from_array(arr, f"{name}__fp16"))
                        fp16_of[name] = f"{name}__fp16"
                    node.input[i] = fp16_of[name]
                else:
                    node.input[i] = cast(name, TensorProto.FLOAT16, fp16_of, "__fp16")
            half_tensors.update(node.output)
        else:
            for i, name in enumerate(node.input):
                if name in half_tensors:
                    node.input[i] = cast(name, TensorProto.FLOAT, fp32_of, "__fp32")
        new_nodes.append(node)
    for out in graph.output:
        if out.name in half_tensors:  # never the case for this network; kept for safety
            raise ValueError(f"graph output '{out.name}' would be fp16")
    nodes = _topological(new_nodes, graph)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    kept_vi = [v for v in graph.value_info if v.name not in half_tensors]
    del graph.value_info[:]
    graph.value_info.extend(kept_vi)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _topological(nodes: list, graph) -> list:
    """Nodes ordered so every input is produced before use (Casts go right after their
    producer)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ready |= {t.name for n in nodes if n.op_type == "Cast" for t in ()}
    for node in nodes:  # fp16 initializers are added to the graph after this
        ready.update(i for i in node.input if i.endswith("__fp16") and not any(
            i in n.output for n in nodes))
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near '{rest[0].name}'")
        pending = rest
    return out
