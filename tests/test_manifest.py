"""The bundle manifest: round trip, and a clear ManifestError for every kind of damage."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from cdiqa.errors import ManifestError
from cdiqa.manifest import (FILE_CHECKPOINT, FILE_NAMES, FILE_ONNX,
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
    assert set(m.entries()) == set(FILE_NAMES) | {"profile:natural"}  # every file _bundle wrote


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(schema_version=True), r"schema_version for manifest .*: got true \(JSON "
                                              r"bool\), expected 1"),
    (lambda d: d.update(schema_version=1.0), r"schema_version for manifest .*: got 1\.0 \(JSON "
                                             r"float\), expected 1"),
    (lambda d: d["files"].pop(FILE_ONNX), r"Missing field for manifest .*: got no 'onnx' in "
                                          r"'files', expected an entry for model\.onnx"),
    (lambda d: d["files"][FILE_CHECKPOINT].update(path=5),
     r"Type for manifest .*: got int for 'files\.checkpoint\.path', expected str"),
    (lambda d: d.update(default_domain=["natural"]),
     r"Type for manifest .*: got array for 'default_domain', expected str"),
    (lambda d: d.update(feature_dim=True), r"got bool for 'feature_dim', expected int"),
    (lambda d: d.update(opset=18.0), r"got float for 'opset', expected int"),
    (lambda d: d["inputs"][0].update(shape=["batch", 3.5, 1, 1]),
     r"got array for 'inputs\[0\]\.shape', expected tuple\[int \| str, \.\.\.\]"),
    (lambda d: d["score"].update(value_range=[0.0]),
     r"got array for 'score\.value_range', expected tuple\[float, float\]"),
    (lambda d: d["plugin"].update(attributes={"k": "5"}),
     r"got object for 'plugin\.attributes', expected dict\[str, int\]"),
    (lambda d: d.update(domain_models={"x": {"files": {}, "adapted": 1}}),
     r"got int for 'domain_models\.x\.adapted', expected bool"),
    (lambda d: d["files"][FILE_ONNX].update(sha256="not-a-hash"),
     r"sha256 for manifest .*: got 'not-a-hash' for 'files\.onnx', expected 64 lowercase hex"),
    (lambda d: d.update(versions=[]), r"got array for 'versions', expected dict\[str, str\]"),
])
def test_every_field_is_checked_by_type(bundle: Path, change, message) -> None:
    _edit(bundle, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(bundle, verify=False)


def test_deeply_nested_json_is_a_manifest_error(bundle: Path) -> None:
    (bundle / MANIFEST_FILE).write_text('{"model_config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ManifestError, match=r"JSON for manifest .*: got arrays or objects "
                                            r"nested too deep"):
        load_manifest(bundle)


def _special(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind, got", [("fifo", "a named pipe"), ("zero", "a character device")])
def test_special_files_are_refused_without_reading(bundle: Path, kind, got) -> None:
    """A FIFO (would block) or a link to /dev/zero (would never end) is refused from its
    descriptor; verify=False reads the profile with no hash check before it."""
    from cdiqa.manifest import read_json

    profile = bundle / "profiles" / "natural.json"
    _special(profile, kind)
    with pytest.raises(ManifestError, match=rf"JSON for domain profile '.*natural\.json': got "
                                            rf"not a regular file \({got}\)"):
        read_json(load_manifest(bundle, verify=False).domain_path("natural"), "domain profile")
    with pytest.raises(ManifestError, match=r"bundle file 'profiles/natural.json': got not a "
                                            r"regular file"):
        load_manifest(bundle)
    _special(bundle / MANIFEST_FILE, kind)
    with pytest.raises(ManifestError, match=rf"JSON for manifest .*: got not a regular file "
                                            rf"\({got}\)"):
        load_manifest(bundle)


def test_a_manifest_above_the_cap_is_refused(bundle: Path, monkeypatch) -> None:
    import cdiqa.manifest as cm

    size = (bundle / MANIFEST_FILE).stat().st_size
    monkeypatch.setattr(cm, "MAX_JSON_BYTES", size - 1)
    with pytest.raises(ManifestError, match=rf"got larger than the limit of {size - 1} bytes"):
        load_manifest(bundle)
    monkeypatch.setattr(cm, "MAX_JSON_BYTES", size)
    load_manifest(bundle)


@pytest.mark.parametrize("change", [lambda d: d["files"].pop(FILE_ONNX),
                                    lambda d: d.update(default_domain=["natural"])])
def test_serve_and_score_exit_1_on_a_damaged_manifest(tiny_bundle, tmp_path, change) -> None:
    """Both were raw KeyError/TypeError tracebacks with exit 2 ('internal error')."""
    import shutil
    import subprocess
    import sys

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    _edit(bundle, change)
    image = Path(__file__).parent / "fixtures" / "natural.png"
    for args in (["score", str(image), str(image), "--bundle", str(bundle)],
                 ["serve", str(bundle), "--port", "0"]):
        proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", *args], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and "manifest.json" in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_an_unverified_bundle_never_hands_a_special_graph_to_a_backend(tiny_bundle, tmp_path,
                                                                       kind) -> None:
    """With verify=False nothing hashes the graph first: a FIFO would block ONNX Runtime's
    load forever and a link to /dev/zero would never end; both are refused before it."""
    from cdiqa.runtime import Scorer

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    _special(load_manifest(copy).path(FILE_ONNX), kind)
    with pytest.raises(ManifestError, match=r"Missing file for bundle file 'model.onnx': got "
                                            r"not a regular file"):
        Scorer.load(copy, "onnxruntime", verify=False)


def test_a_graph_above_the_cap_is_refused(tiny_bundle, monkeypatch) -> None:
    import cdiqa.manifest as cm
    import cdiqa.runtime.maps as maps
    from cdiqa.runtime import Scorer

    size = load_manifest(tiny_bundle).path(FILE_ONNX).stat().st_size
    monkeypatch.setattr(cm, "MAX_GRAPH_BYTES", size - 1)
    with pytest.raises(ManifestError, match=rf"Size for bundle file 'model.onnx': got {size} "
                                            rf"bytes, expected at most {size - 1} bytes"):
        Scorer.load(tiny_bundle, "onnxruntime", verify=False)
    manifest = load_manifest(tiny_bundle)
    maps_size = maps.maps_path(manifest).stat().st_size
    monkeypatch.setattr(maps, "MAX_GRAPH_BYTES", maps_size - 1)
    with pytest.raises(ManifestError, match=r"Size for bundle file 'model.maps.onnx'"):
        maps.maps_path(manifest)
    monkeypatch.setattr(cm, "MAX_GRAPH_BYTES", size)
    Scorer.load(tiny_bundle, "onnxruntime", verify=False).close()
