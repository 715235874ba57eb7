"""`iqa-export check`: a clear report, with and without torch; damage is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402
from cdiqa.export import check_bundle  # noqa: E402


def test_report_with_torch(tiny_bundle: Path) -> None:
    pytest.importorskip("torch")
    report = check_bundle(tiny_bundle)
    assert report.ok and report.mode == "torch parity", report.to_dict()
    names = [i.name for i in report.items]
    assert names == ["files", "graph:portable", "graph:plugin", "plugin nodes", "graph:maps",
                     "masking modules", "parity:scores"]


def test_self_consistency_without_torch(tiny_bundle: Path) -> None:
    report = check_bundle(tiny_bundle, parity=False)
    assert report.ok and report.mode == "self-consistency", report.to_dict()
    assert [i.name for i in report.items][-3:] == ["identical pairs", "batch = one by one",
                                                   "roi halves add up"]


def test_altered_file_is_reported(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "model.plugin.onnx", "ab") as f:
        f.write(b"\0")
    report = check_bundle(copy)
    assert not report.ok
    assert report.items[0].name == "files"
    assert "sha256 for bundle file 'model.plugin.onnx'" in report.items[0].detail


def test_a_bundle_without_maps_is_checked_without_that_item(tiny_bundle: Path,
                                                            tmp_path: Path) -> None:
    from cdiqa.manifest import FILE_ONNX_MAPS, MANIFEST_FILE

    copy = tmp_path / "old"
    shutil.copytree(tiny_bundle, copy)
    raw = json.loads((copy / MANIFEST_FILE).read_text())
    (copy / raw["files"].pop(FILE_ONNX_MAPS)["path"]).unlink()
    (copy / MANIFEST_FILE).write_text(json.dumps(raw))
    report = check_bundle(copy, parity=False)
    assert report.ok and "graph:maps" not in [i.name for i in report.items], report.to_dict()


def test_cli(tiny_bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(tiny_bundle), "--no-parity", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True
    result = runner.invoke(app, ["check", str(tiny_bundle), "--no-parity"])
    assert result.exit_code == 0 and "roi halves add up" in result.output
    result = runner.invoke(app, ["check", str(tmp_path), "--json"])
    assert result.exit_code == 1 and "no manifest.json" in result.output


def test_a_parity_failure_is_a_parity_error(tiny_bundle: Path) -> None:
    """Scores of another model than the bundle's: a ParityError naming the domain, not a
    ShapeError (no shape is wrong)."""
    pytest.importorskip("torch")
    from cdiqa.errors import ParityError
    from cdiqa.export.check import parity_pairs, score_parity
    from cdiqa.export.testing import tiny_model
    from cdiqa.runtime import Scorer

    with Scorer.load(tiny_bundle, "onnxruntime", verify=False) as scorer:
        with pytest.raises(ParityError, match=r"Score error for domain '\w+ \(.*\)': got "
                                              r".*, expected <= .*Re-export the bundle"):
            score_parity(tiny_model(seed=1), scorer, list(parity_pairs())[:1])
