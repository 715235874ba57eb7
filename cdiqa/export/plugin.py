"""The masking op as one custom ONNX node: what ``model.plugin.onnx`` holds per scale.

How TensorRT maps the node to the plugin (onnx-tensorrt ``ModelImporter.cpp`` and
``onnxOpImporters.cpp``, ``FallbackPluginImporter``)::

    node.op_type                 -> plugin name       (looked up only by op_type; an op_type
                                                        that is a built-in ONNX op would win)
    attribute plugin_version     -> plugin version    (string, default "1")
    attribute plugin_namespace   -> plugin namespace  (string, default "")
    every attribute named in the creator's getFieldNames() -> a PluginField
                                    (INT -> kINT32, FLOAT -> kFLOAT32, STRING -> kCHAR)
    node.domain                  -> ignored by the parser

Since the parser ignores the domain, the domain is chosen for the other consumers of the
graph: ``trt.plugins`` is the domain under which ONNX Runtime's TensorRT execution provider
registers every TensorRT plugin as a custom op (and the one NVIDIA's ModelOpt quantizer
expects), so the same file also loads there. The op's own name ``CdiqaMasking`` does not
collide with a standard ONNX op, so the parser always falls back to the plugin for it.

The op's name, namespace, version, inputs and attributes come from the kernel's
machine-readable contract, ``cdiqa/kernels/masking/spec.yaml`` (``cdiqa.kernels.load_spec``),
and from nowhere else. The spec calls its namespace the "ONNX domain and TensorRT plugin
namespace"; for the parser only the plugin namespace matters, and the node keeps the
``trt.plugins`` domain for the reason above.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from cdiqa.errors import ConfigError, describe
from cdiqa.manifest import PluginSpec

#: ONNX domain of the plugin nodes (see the module docstring for why).
PLUGIN_ONNX_DOMAIN = "trt.plugins"
#: ONNX opset version of that domain.
PLUGIN_ONNX_VERSION = 1
#: torch op that stands for the plugin while exporting (eager: the decomposed torch op).
TORCH_OP = "cdiqa_export::masking_plugin"
_TORCH_SCHEMA = "(Tensor e, Tensor a, Tensor gamma, Tensor sigma, int k) -> Tensor"


def kernel_contract() -> dict:
    """Name, namespace, version, input names and {attribute: type} of the masking plugin,
    from the kernel's ``spec.yaml``."""
    from cdiqa.kernels import load_spec

    spec = load_spec()
    return {"name": spec["op"], "namespace": spec["namespace"], "version": str(spec["version"]),
            "inputs": tuple(i["name"] for i in spec["inputs"]),
            "attributes": {a["name"]: a["type"] for a in spec["attributes"]}}


def plugin_spec(window: int, count: int) -> PluginSpec:
    """The ``PluginSpec`` of a model with ``count`` masking scales of window ``window``.

    Raises:
        ConfigError: the kernel spec has an attribute the exporter has no value for.
    """
    c = kernel_contract()
    values = {"k": int(window)}
    unknown = sorted(set(c["attributes"]) - set(values))
    if unknown:
        raise ConfigError(describe("Attributes", "kernel spec", c["name"], unknown,
                                   f"only {sorted(values)}", "Teach cdiqa.export.plugin the new "
                                   "attribute's value"))
    return PluginSpec(name=c["name"], namespace=c["namespace"], version=c["version"],
                      onnx_domain=PLUGIN_ONNX_DOMAIN, inputs=c["inputs"],
                      attributes={a: values[a] for a in c["attributes"]}, count=int(count))


@lru_cache(maxsize=None)
def torch_plugin_op() -> Callable:
    """The torch custom op standing for the plugin (created on first call: needs torch).

    Eagerly it computes the decomposed op, so a model run with it gives the same stats;
    exported through ``onnx_translation()`` it becomes one plugin node.
    """
    from cdiqa import _lazy
    from cdiqa.model import masking as tm

    torch = _lazy.torch()

    # explicit schema: this module's annotations are strings (``from __future__``)
    @torch.library.custom_op(TORCH_OP, mutates_args=(), schema=_TORCH_SCHEMA)
    def masking_plugin(e, a, gamma, sigma, k):
        return tm.masking_stats(e, a, gamma, sigma, k)

    @masking_plugin.register_fake
    def _(e, a, gamma, sigma, k):
        return e.new_empty((e.shape[0], 2, e.shape[1]))

    return masking_plugin


def onnx_translation() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: the op -> one plugin node."""
    from cdiqa import _lazy

    torch_plugin_op()  # registers torch.ops.cdiqa_export.masking_plugin
    overload = _lazy.torch().ops.cdiqa_export.masking_plugin.default
    spec = kernel_contract()
    node = _onnxscript_op(spec["name"], spec["inputs"], spec["attributes"])
    namespace, version = spec["namespace"], spec["version"]

    def masking_plugin(e, a, gamma, sigma, k: int):
        return node(e, a, gamma, sigma, k=k, plugin_namespace=namespace,
                    plugin_version=version)

    return {overload: masking_plugin}


def _onnxscript_op(name: str, inputs: tuple[str, ...], attributes: dict[str, str]):
    """An onnxscript ``Op`` for the plugin node; its schema exists only for the exporter."""
    import onnx
    from onnxscript import values

    schema = onnx.defs.OpSchema
    param = schema.FormalParameter
    kinds = {"int": schema.AttrType.INT, "float": schema.AttrType.FLOAT,
             "string": schema.AttrType.STRING}
    attrs = [schema.Attribute(a, kinds[t], a) for a, t in attributes.items()]
    attrs += [schema.Attribute(a, schema.AttrType.STRING, a)
              for a in ("plugin_namespace", "plugin_version")]
    op_schema = schema(name, PLUGIN_ONNX_DOMAIN, PLUGIN_ONNX_VERSION,
                       inputs=[param(n, "T") for n in inputs],
                       outputs=[param("stats", "T")],
                       type_constraints=[("T", ["tensor(float)"], "float32")],
                       attributes=attrs)
    return values.Op(values.Opset(PLUGIN_ONNX_DOMAIN, PLUGIN_ONNX_VERSION), name, op_schema)
