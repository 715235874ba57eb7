"""torch -> ONNX: the maps graph ``(ref, dist) -> (map0, ..., map<S-1>)`` of a bundle.

One output per masking scale s: the masked degradation n_s (B, C_s, h_s, w_s) before pooling
(``cdiqa.masking.masking_map``), at that scale's own resolution (stride ``ModelConfig.strides[s]``).
It is a separate file (``model.maps.onnx``), not extra outputs of ``model.onnx``: the scoring
session loads and runs exactly the graph it ran before, so scoring speed cannot change, and
only ``Scorer.quality_map`` opens this one. The head's weights and the upsampling to image size
are applied by the runtime (``cdiqa.runtime.maps``), like the head of a score: one graph serves
every domain profile.
"""

from __future__ import annotations

from cdiqa import _lazy
from cdiqa.manifest import DIM_BATCH, DIM_HEIGHT, DIM_WIDTH, INPUT_DIST, INPUT_REF, OUTPUT_MAP
from cdiqa.masking import MIN_SIZE


def map_names(scales: int) -> tuple[str, ...]:
    """Output names of the maps graph of a model with ``scales`` masking scales."""
    return tuple(f"{OUTPUT_MAP}{s}" for s in range(scales))


def maps_module(model):
    """The ``nn.Module`` that is exported: ``(ref, dist) -> tuple of n_s``.

    The same codes, activity and masking parameters as ``CDIQA.stats_from_codes``; only the op
    passed to each ``Masking`` module differs (the map instead of its sums), so the maps are
    exactly what the scoring graph pools. The model is a copy with its front end folded.
    """
    from cdiqa.export.fold import fold_front_end
    from cdiqa.model.masking import masking_map

    torch = _lazy.torch()
    model = fold_front_end(model)

    class MapsModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ref, dist):
            m = self.model
            r, d = m.codes(ref), m.codes(dist)
            return tuple(mod(dd - dr, cr, masking_map, cd if act == "both" else None)
                         for mod, cr, cd, dr, dd, act in zip(m.masking, r.content, d.content,
                                                             r.degradation, d.degradation,
                                                             m.cfg.activities))

    return MapsModule().eval()


def maps_onnx_from_torch(model, *, opset: int):
    """Export the maps graph of ``model`` (a ``CDIQA``) as a checked ``onnx.ModelProto``.

    Dynamic batch, height and width; inputs ``ref``/``dist`` (B, 3, H, W) float32; powers
    rewritten for ONNX Runtime as in the portable scoring graph.
    """
    from cdiqa.export.graph import _EXAMPLE, _quiet, _tidy, check_graph
    from cdiqa.export.rewrite import pow_as_exp_log

    torch = _lazy.torch()
    module = maps_module(model)
    b, h, w = _EXAMPLE
    example = (torch.rand(b, 3, h, w), torch.rand(b, 3, h, w))
    image = {0: torch.export.Dim(DIM_BATCH, min=1), 2: torch.export.Dim(DIM_HEIGHT, min=MIN_SIZE),
             3: torch.export.Dim(DIM_WIDTH, min=MIN_SIZE)}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module, example, dynamo=True, opset_version=opset, optimize=True,
            input_names=[INPUT_REF, INPUT_DIST],
            output_names=list(map_names(len(model.cfg.channels))),
            dynamic_shapes={INPUT_REF: image, INPUT_DIST: image}, verbose=False)
    proto = program.model_proto
    _tidy(proto, "maps")
    proto.doc_string = "cdiqa masking maps before pooling, one output per scale"
    pow_as_exp_log(proto)
    check_graph(proto)
    return proto
