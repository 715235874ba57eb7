"""``iqa-export doctor`` runs without a GPU and says, per component, what it found or why not."""

from __future__ import annotations

import json
import sys

import pytest

from cdiqa import _lazy
from cdiqa.runtime.doctor import NOT_FOUND, diagnose, report_dict, report_table

COMPONENTS = ("nvcc", "TensorRT", "TensorRT QDP plugins", "cuda-python", "ONNX Runtime")


def test_every_component_has_a_row_and_missing_ones_a_reason() -> None:
    findings = diagnose()
    names = [f.component for f in findings]
    assert all(c in names for c in COMPONENTS)
    assert any(n.startswith("GPU") for n in names)
    for f in findings:
        assert f.value and (f.found or f.detail), f"{f.component}: not found without a reason"


def test_missing_tensorrt_is_reported_with_the_extra() -> None:
    if _lazy.available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    trt = {f.component: f for f in diagnose()}["TensorRT"]
    assert trt.value == NOT_FOUND and "install 'cdiqa[trt]'" in trt.detail


def test_table_and_json(monkeypatch, capsys) -> None:
    findings = diagnose()
    table = report_table(findings)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["component", "found"] and set(lines[1]) == {"-"}
    assert len(lines) == len(findings) + 2
    from cdiqa.cli import main

    monkeypatch.setattr(sys, "argv", ["iqa-export", "doctor", "--json"])
    try:
        main()
    except SystemExit as exc:  # main() exits only on an error, or with 0
        assert not exc.code
    rows = json.loads(capsys.readouterr().out)
    assert rows == report_dict(findings) or [r["component"] for r in rows] == \
        [f.component for f in findings]
    assert all(set(r) == {"component", "value", "detail", "found"} for r in rows)
