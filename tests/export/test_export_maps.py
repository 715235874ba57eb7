"""The maps graph (model.maps.onnx): written by every export and in the bundled default, a
separate file so the scoring graph is untouched, and equal to the torch model's masking maps
and to what the scoring graph sums."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cdiqa.export.maps import map_names, maps_module  # noqa: E402
from cdiqa.manifest import (DEFAULT_BUNDLE, FILE_CHECKPOINT, FILE_ONNX,  # noqa: E402
                            FILE_ONNX_MAPS, OUTPUT_NAMES, load_manifest)
from cdiqa.model.network import load_model  # noqa: E402
from cdiqa.runtime.maps import MapsGraph  # noqa: E402
from cdiqa.runtime.preprocess import feed  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402


def _pairs(rng, size=(100, 130)):
    """A batch of 2 noisy pairs, one side not a multiple of 32 (or of 8)."""
    refs = [rng.random((*size, 3), np.float32) for _ in range(2)]
    dists = [np.clip(r + s * rng.standard_normal(r.shape, np.float32), 0, 1)
             for r, s in zip(refs, (0.02, 0.1))]
    return feed(refs, dists)


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_maps_graph_matches_the_torch_model(which, tiny_bundle, rng) -> None:
    manifest = load_manifest(tiny_bundle if which == "tiny" else DEFAULT_BUNDLE)
    model = load_model(manifest.path(FILE_CHECKPOINT))
    inputs = _pairs(rng)
    got = MapsGraph(manifest).run(inputs)
    with torch.no_grad():
        want = maps_module(model)(torch.from_numpy(inputs["ref"]),
                                  torch.from_numpy(inputs["dist"]))
    assert len(got) == len(want) == len(manifest.tiling.strides)
    for g, w, stride in zip(got, want, manifest.tiling.strides):
        assert g.shape == tuple(w.shape) and g.shape[2] == pytest.approx(100 / stride, abs=1)
        assert relative_error(g, w.numpy()) <= tolerance("onnx").rtol


def test_maps_sum_to_the_scoring_graphs_sums(tiny_bundle, rng) -> None:
    """The maps are what the scoring graph pools: their sums are its ``sums`` output."""
    import onnxruntime as ort

    manifest = load_manifest(tiny_bundle)
    inputs = _pairs(rng)
    maps = MapsGraph(manifest).run(inputs)
    scoring = ort.InferenceSession(str(manifest.path(FILE_ONNX)),
                                   providers=["CPUExecutionProvider"])
    sums = scoring.run(["sums"], inputs)[0]
    got = np.concatenate([n.sum(axis=(2, 3), dtype=np.float64) for n in maps], axis=1)
    assert relative_error(got, sums) <= tolerance("onnx").rtol


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_bundle_lists_a_separate_maps_graph(which, tiny_bundle) -> None:
    manifest = load_manifest(tiny_bundle if which == "tiny" else DEFAULT_BUNDLE)  # sha256s
    assert manifest.files[FILE_ONNX_MAPS].path == "model.maps.onnx"
    maps = onnx.load(str(manifest.path(FILE_ONNX_MAPS)))
    scales = len(manifest.model_config["channels"])
    assert [o.name for o in maps.graph.output] == list(map_names(scales))
    assert [i.name for i in maps.graph.input] == ["ref", "dist"]
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in maps.graph.output]
    assert all(d[0] == "batch" and isinstance(d[2], str) for d in dims)  # dynamic sizes
    assert not [n for n in maps.graph.node if n.op_type == "Pow"]  # rewritten for ORT
    scoring = onnx.load(str(manifest.path(FILE_ONNX)))
    assert [o.name for o in scoring.graph.output] == list(OUTPUT_NAMES)  # unchanged
