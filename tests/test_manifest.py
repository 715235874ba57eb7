"""The bundle manifest: round trip, and a clear ManifestError for every kind of damage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cdiqa.errors import ManifestError
from cdiqa.manifest import (FILE_CHECKPOINT, FILE_NAMES, FILE_ONNX, FILE_ONNX_PLUGIN,
                            INPUT_NAMES, MANIFEST_FILE, OUTPUT_NAMES, SCHEMA_VERSION, Manifest,
                            PluginSpec, Preprocessing, ScoreSpec, TilingSpec, file_entry,
                            load_manifest, save_manifest, tensor_specs)


def _bundle(root: Path) -> Manifest:
    """A bundle of placeholder files with a valid manifest."""
    for key, name in FILE_NAMES.items():
        (root / name).write_bytes(key.encode() * 10)
    (root / "profiles").mkdir()
    (root / "profiles" / "natural.json").write_text("{}")
    inputs, outputs = tensor_specs(32)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION, model_id="cdiqa-test", created="2026-01-01T00:00:00",
        model_config={"channels": [8, 8, 8, 8]}, feature_dim=64, opset=18, precision="fp32",
        files={k: file_entry(root, n) for k, n in FILE_NAMES.items()},
        inputs=inputs, outputs=outputs, preprocessing=Preprocessing(conversions={"a": "b"}),
        score=ScoreSpec(), domains={"natural": file_entry(root, "profiles/natural.json")},
        default_domain="natural", tiling=TilingSpec(),
        plugin=PluginSpec("CdiqaMasking", "cdiqa", "1", "trt.plugins", ("e", "a", "gamma", "sigma"),
                          {"k": 5}, 4),
        versions={"cdiqa": "0.1.0"})
    save_manifest(manifest, root)
    return manifest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    _bundle(tmp_path)
    return tmp_path


def _edit(bundle: Path, change) -> None:
    path = bundle / MANIFEST_FILE
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def test_round_trip(tmp_path: Path) -> None:
    written = _bundle(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded == replace(written, root=tmp_path)
    assert loaded.root == tmp_path
    assert tuple(t.name for t in loaded.inputs) == INPUT_NAMES
    assert tuple(t.name for t in loaded.outputs) == OUTPUT_NAMES
    assert loaded.dynamic_axes["ref"] == {0: "batch", 2: "height", 3: "width"}
    assert loaded.dynamic_axes["sums"] == {0: "batch"}
    assert loaded.path(FILE_ONNX) == tmp_path / "model.onnx"
    assert loaded.domain_path("natural") == tmp_path / "profiles" / "natural.json"


def test_manifest_is_frozen(bundle: Path) -> None:
    m = load_manifest(bundle)
    with pytest.raises(AttributeError):
        m.opset = 19  # type: ignore[misc]


def test_unknown_schema_version(bundle: Path) -> None:
    _edit(bundle, lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match=r"schema_version for manifest .*: got 99, "
                                            rf"expected {SCHEMA_VERSION}\. Re-export"):
        load_manifest(bundle)


def test_missing_field(bundle: Path) -> None:
    _edit(bundle, lambda d: d.pop("opset"))
    with pytest.raises(ManifestError, match=r"Missing field for manifest .*: got no 'opset'"):
        load_manifest(bundle)


def test_missing_nested_field(bundle: Path) -> None:
    _edit(bundle, lambda d: d["inputs"][0].pop("dtype"))
    with pytest.raises(ManifestError, match=r"got no 'dtype' in 'inputs\[0\]'"):
        load_manifest(bundle)


def test_unknown_field(bundle: Path) -> None:
    _edit(bundle, lambda d: d.update(colour_space="RGB"))
    with pytest.raises(ManifestError, match=r"Unknown field for manifest .*'colour_space'"):
        load_manifest(bundle)


def test_altered_file(bundle: Path) -> None:
    (bundle / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match=r"sha256 for bundle file 'model.onnx': got .*, "
                                            r"expected .*altered or corrupted"):
        load_manifest(bundle)
    load_manifest(bundle, verify=False)  # structure alone still loads


def test_missing_file(bundle: Path) -> None:
    (bundle / "profiles" / "natural.json").unlink()
    with pytest.raises(ManifestError, match=r"Missing file for bundle file "
                                            r"'profiles/natural.json': got no such file"):
        load_manifest(bundle)


def test_path_outside_bundle(bundle: Path) -> None:
    _edit(bundle, lambda d: d["files"][FILE_CHECKPOINT].update(path="../model.pt"))
    with pytest.raises(ManifestError, match=r"Path for manifest .*'../model.pt'.*relative path "
                                            r"inside the bundle"):
        load_manifest(bundle)


def test_default_domain_must_have_a_profile(bundle: Path) -> None:
    _edit(bundle, lambda d: d.update(default_domain="medical"))
    with pytest.raises(ManifestError, match=r"default_domain for manifest .*got medical"):
        load_manifest(bundle)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"got no manifest.json"):
        load_manifest(tmp_path)


def test_invalid_json(bundle: Path) -> None:
    (bundle / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match=r"JSON for manifest"):
        load_manifest(bundle)


def test_unknown_domain_suggests(bundle: Path) -> None:
    m = load_manifest(bundle)
    with pytest.raises(ManifestError, match=r"Did you mean 'natural'"):
        m.domain_path("naturel")
    with pytest.raises(ManifestError, match=r"no 'calibration' entry"):
        m.path("calibration")


def test_every_file_is_listed(bundle: Path) -> None:
    m = load_manifest(bundle)
    assert set(m.entries()) == {FILE_ONNX, FILE_ONNX_PLUGIN, FILE_CHECKPOINT, "profile:natural"}
