"""precision="auto" (cdiqa.runtime.precision): only gated graphs, each distinct graph timed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cdiqa.manifest import load_manifest
from cdiqa.runtime import Scorer
from cdiqa.runtime.backends import SessionOptions
from cdiqa.runtime.precision import choose_precision, gated_precisions
from cdiqa.runtime.scorer import open_session

# the same graph with a second ModelProto.doc_string (field 6) appended: protobuf keeps the
# last, ONNX Runtime runs it unchanged, and its bytes (so its sha256) differ from model.onnx
DOC_STRING = b"\x32\x04int8"


def _with_int8(tiny_bundle: Path, tmp_path: Path, *, passed: bool, distinct: bool) -> Path:
    """A copy of the tiny bundle whose 'natural' domain has an INT8 graph and its gate."""
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    graph = (out / "model.onnx").read_bytes() + (DOC_STRING if distinct else b"")
    (out / "domains" / "natural").mkdir(parents=True)
    (out / "domains/natural/model.int8.onnx").write_bytes(graph)
    manifest = json.loads((out / "manifest.json").read_text())
    gate = {"precision": "int8", "pairs": 20, "srcc_vs_fp32": 0.99, "mean_abs_diff": 0.01,
            "srcc_ladder": 0.9, "srcc_ladder_fp32": 0.9, "max_drop": 0.02,
            "passed": passed, "accepted": passed}
    manifest["domain_models"] = {"natural": {
        "files": {"int8": {"path": "domains/natural/model.int8.onnx",
                           "sha256": hashlib.sha256(graph).hexdigest()}},
        "adapted": False, "calibration_method": "percentile", "gates": {"int8": gate},
        "created": ""}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


class _Clock:
    """Time that advances by the cost of the precision whose session is running."""

    def __init__(self, cost: dict[str, float]):
        self.cost, self.now, self.running = cost, 0.0, None

    def __call__(self) -> float:
        self.now += self.cost[self.running] / 2  # start and end of each run
        return self.now


def _opener(manifest, clock: _Clock, opened: list):
    def open_for(precision):
        opened.append(precision)
        clock.running = precision
        return open_session(manifest, "onnxruntime", "cpu",
                            SessionOptions(threads=1, precision=precision))
    return open_for


@pytest.mark.parametrize("faster", ["fp32", "int8"])
def test_auto_keeps_the_faster_of_two_gated_graphs(tiny_bundle, tmp_path, faster):
    manifest = load_manifest(_with_int8(tiny_bundle, tmp_path, passed=True, distinct=True))
    assert gated_precisions(manifest) == ["fp32", "int8"]
    clock, opened = _Clock({faster: 1.0, ({"fp32", "int8"} - {faster}).pop(): 2.0}), []
    assert choose_precision(manifest, None, _opener(manifest, clock, opened), clock) == faster
    assert opened == ["fp32", "int8"]


def test_a_graph_whose_gate_failed_is_never_a_candidate(tiny_bundle, tmp_path):
    manifest = load_manifest(_with_int8(tiny_bundle, tmp_path, passed=False, distinct=True))
    assert gated_precisions(manifest) == ["fp32"]
    opened = []
    clock = _Clock({"fp32": 2.0, "int8": 1.0})
    assert choose_precision(manifest, None, _opener(manifest, clock, opened), clock) == "fp32"
    assert opened == []  # one candidate: nothing to time


def test_graphs_with_the_same_bytes_are_not_timed(tiny_bundle, tmp_path):
    manifest = load_manifest(_with_int8(tiny_bundle, tmp_path, passed=True, distinct=False))
    opened = []
    clock = _Clock({"fp32": 2.0, "int8": 1.0})
    assert choose_precision(manifest, None, _opener(manifest, clock, opened), clock) == "fp32"
    assert opened == []


def test_scorer_auto_scores_as_the_precision_it_chose(tiny_bundle, tmp_path, natural_image):
    bundle = _with_int8(tiny_bundle, tmp_path, passed=True, distinct=True)
    dist = np.clip(natural_image + 0.1, 0, 1)
    with Scorer.load(bundle, backend="onnxruntime", precision="auto") as auto:
        assert auto.precision in ("fp32", "int8")
        with Scorer.load(bundle, backend="onnxruntime", precision=auto.precision) as fixed:
            assert auto.score(natural_image, dist) == fixed.score(natural_image, dist)
