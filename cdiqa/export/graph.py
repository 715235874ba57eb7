"""torch -> ONNX: the graph ``(ref, dist, roi) -> (sums, sumsq, counts)`` in two forms.

=========  =========================================================================
form       masking module becomes
=========  =========================================================================
portable   AveragePool(count_include_pad=0), Pow (then Exp/Log), Div, ReduceSum: any ORT
plugin     one ``CdiqaMasking`` node per scale (``cdiqa.export.plugin``): TensorRT
=========  =========================================================================

Exporter: ``torch.onnx.export(dynamo=True)``. In torch 2.13 it is the default and maintained
exporter (the TorchScript one warns that it is deprecated); it folds the parameter transforms
(softplus of gamma, sigma and the mixing) into initializers, names the dynamic dims, and maps a
``torch.library.custom_op`` to a custom node through an onnxscript translation. Both exporters
were tried: both give graphs within 1e-6 of torch; TorchScript exports in 0.3 s instead of
~12 s but leaves 12 Softplus nodes and needs an autograd.Function symbolic per op.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager, redirect_stdout
from typing import Iterator, Literal

from cdiqa import _lazy
from cdiqa.errors import ConfigError, describe
from cdiqa.manifest import (DIM_BATCH, DIM_HEIGHT, DIM_WIDTH, INPUT_DIST, INPUT_NAMES,
                            INPUT_REF, INPUT_ROI, OUTPUT_NAMES)
from cdiqa.masking import MIN_SIZE

Form = Literal["portable", "plugin"]
FORMS: tuple[Form, ...] = ("portable", "plugin")
#: Lowest opset with everything used (AveragePool count_include_pad, ReduceSum axes input).
MIN_OPSET = 18
#: Example input size for tracing: neither 0/1 nor equal H and W, so no dim gets specialised.
_EXAMPLE = (2, 96, 128)


def onnx_from_torch(model, form: Form = "portable", *, opset: int = MIN_OPSET):
    """Export ``model`` (a ``CDIQA``) to an ``onnx.ModelProto`` of the given form.

    Dynamic batch, height and width; inputs ``ref``/``dist`` (B, 3, H, W) float32 and ``roi``
    (B, 4) int32; outputs ``sums``/``sumsq``/``counts`` (B, D) float32. The portable form's
    powers are rewritten for ONNX Runtime (``cdiqa.export.rewrite``). The result has passed
    ``onnx.checker`` (full check) and strict shape inference.
    """
    if form not in FORMS:
        raise ConfigError(describe("Form", "export", "form", repr(form), f"one of {FORMS}",
                                   "Choose 'portable' or 'plugin'"))
    if opset < MIN_OPSET:
        raise ConfigError(describe("Opset", "export", "opset", opset, f">= {MIN_OPSET}",
                                   f"Use --opset {MIN_OPSET} or higher"))
    torch = _lazy.torch()
    wrapper = graph_module(model, form).eval()
    b, h, w = _EXAMPLE
    example = (torch.rand(b, 3, h, w), torch.rand(b, 3, h, w),
               torch.tensor([[0, 0, h, w]] * b, dtype=torch.int32))
    batch = torch.export.Dim(DIM_BATCH, min=1)
    height = torch.export.Dim(DIM_HEIGHT, min=MIN_SIZE)
    width = torch.export.Dim(DIM_WIDTH, min=MIN_SIZE)
    image = {0: batch, 2: height, 3: width}
    table = None
    if form == "plugin":
        from cdiqa.export.plugin import onnx_translation

        table = onnx_translation()
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapper, example, dynamo=True, opset_version=opset, optimize=True,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_REF: image, INPUT_DIST: image, INPUT_ROI: {0: batch}},
            custom_translation_table=table, verbose=False)
    proto = program.model_proto
    _tidy(proto, form)
    if form == "portable":
        from cdiqa.export.rewrite import pow_as_exp_log

        pow_as_exp_log(proto)
    check_graph(proto)
    return proto


def check_graph(proto) -> None:
    """onnx.checker (full) and strict shape inference; raises their errors unchanged."""
    onnx = _lazy.onnx()
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def _tidy(proto, form: Form) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths)."""
    from cdiqa import __version__

    for node in proto.graph.node:
        del node.metadata_props[:]
    proto.producer_name = "cdiqa"
    proto.producer_version = __version__
    proto.doc_string = f"cdiqa masking statistics, {form} form"


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress prints and its warnings about merged dim names."""
    import logging

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def graph_module(model, form: Form):
    """The ``nn.Module`` that is exported: ``(ref, dist, roi) -> (sums, sumsq, counts)``.

    The masking implementation is an explicit argument of ``CDIQA.forward`` (``op``), so the
    two forms differ only in the op passed here; nothing is patched. The model is a copy with
    its front end folded (``cdiqa.export.fold``).
    """
    from cdiqa.export.fold import fold_front_end

    torch = _lazy.torch()
    model = fold_front_end(model)
    if form == "plugin":
        from cdiqa.export.plugin import torch_plugin_op

        op = torch_plugin_op()
    else:
        from cdiqa.model.masking import masking_stats as op

    class GraphModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ref, dist, roi):
            return tuple(self.model(ref, dist, roi, op=op))

    return GraphModule()
