"""Bundle layout and manifest content; atomic replacement; option errors; the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

import cdiqa.export.bundle as bundle_mod  # noqa: E402
from cdiqa.errors import ConfigError, ManifestError  # noqa: E402
from cdiqa.export import ExportConfig, export_bundle  # noqa: E402
from cdiqa.export.testing import fitted_head, tiny_model  # noqa: E402
from cdiqa.heads import LabelFreeHead  # noqa: E402
from cdiqa.manifest import (FILE_NAMES, MANIFEST_FILE, SCHEMA_VERSION, load_manifest,  # noqa: E402
                            sha256_file)


def test_layout_and_manifest(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle)
    names = sorted(p.relative_to(tiny_bundle).as_posix() for p in tiny_bundle.rglob("*")
                   if p.is_file())
    assert names == sorted([*FILE_NAMES.values(), MANIFEST_FILE, "profiles/medical.json",
                            "profiles/natural.json"])
    for entry in m.entries().values():
        assert sha256_file(tiny_bundle / entry.path) == entry.sha256
    assert m.schema_version == SCHEMA_VERSION and m.opset == 18 and m.precision == "fp32"
    assert m.feature_dim == 64 and m.model_config["channels"] == [8, 8, 8, 8]
    assert m.default_domain == "natural" and set(m.domains) == {"natural", "medical"}
    assert m.score.direction == "higher_is_better" and m.score.value_range == (0.0, 1.0)
    assert m.preprocessing.layout == "NCHW" and m.preprocessing.min_size == 64
    assert m.preprocessing.conversions["8-bit RGB"] == "/ 255"
    assert "16-bit (I;16, I)" in m.preprocessing.conversions
    assert m.tiling.alignment == 32 and m.tiling.halo == 128
    assert (m.plugin.name, m.plugin.namespace, m.plugin.version) == ("CdiqaMasking", "cdiqa", "1")
    assert m.plugin.onnx_domain == "trt.plugins" and m.plugin.attributes == {"k": 5}
    assert m.plugin.inputs == ("e", "a", "gamma", "sigma") and m.plugin.count == 4
    assert set(m.versions) >= {"cdiqa", "torch", "onnx"}
    head = json.loads((tiny_bundle / "profiles" / "natural.json").read_text())
    assert head["kind"] == "label_free"


def test_replaces_only_when_complete(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / MANIFEST_FILE).write_text("old")

    def crash(root, *args):
        (root / "model.onnx").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_mod, "_write", crash)
    model = tiny_model()
    with pytest.raises(RuntimeError, match="disk full"):
        export_bundle(out, model, {"natural": fitted_head(model)})
    assert (out / MANIFEST_FILE).read_text() == "old"  # the old bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp dir left

    def complete(root, *args):
        (root / "new").write_text("new")

    monkeypatch.setattr(bundle_mod, "_write", complete)
    monkeypatch.setattr(bundle_mod, "load_manifest", lambda *a, **k: None)
    export_bundle(out, model, {"natural": fitted_head(model)})
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_progress_counts_every_step_up_to_the_total(tmp_path: Path) -> None:
    model = tiny_model()
    seen = []
    export_bundle(tmp_path / "b", model, {"natural": fitted_head(model)},
                  progress=lambda *a: seen.append(a))
    total = sum(bundle_mod.EXPORT_STEPS.values())
    assert [s for s, _, _ in seen] == [*bundle_mod.EXPORT_STEPS, "done"]
    assert {n for _, _, n in seen} == {total}
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total


def test_refuses_to_overwrite_a_non_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"Output for bundle .*a folder that is not a bundle"):
        export_bundle(tmp_path, tiny_model(), {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_option_errors(tmp_path: Path) -> None:
    model = tiny_model()
    head = fitted_head(model)
    with pytest.raises(ConfigError, match=r"Default domain for export .*got 'natural', "
                                          r"expected one of \['medical'\]"):
        export_bundle(tmp_path / "b", model, {"medical": head})
    with pytest.raises(ConfigError, match=r"Name for domain 'Under Water'"):
        export_bundle(tmp_path / "b", model, {"Under Water": head})
    with pytest.raises(ConfigError, match=r"Halo for export option 'halo': got 50"):
        ExportConfig(halo=50)
    small_head = LabelFreeHead(scale=np.ones(10), weights=np.full(10, 0.1))
    with pytest.raises(ConfigError, match=r"Head size for domain profile 'natural': got 10, "
                                          r"expected 64"):
        export_bundle(tmp_path / "b", model, {"natural": small_head})
    with pytest.raises(ManifestError, match=r"Kind for head"):
        export_bundle(tmp_path / "b", model, {"natural": {"kind": "magic"}})
    assert not (tmp_path / "b").exists()


def test_cli_export_parses_profiles(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import cdiqa.export
    from cdiqa.cli import app

    seen = {}

    def fake_export(out, checkpoint, profiles, config, progress):
        seen.update(out=out, checkpoint=checkpoint, profiles=profiles, config=config)
        step = bundle_mod.stepper(progress, bundle_mod.EXPORT_STEPS)
        for name in (*bundle_mod.EXPORT_STEPS, bundle_mod.DONE):
            step(name)
        return SimpleNamespace(model_id="cdiqa-x", domains=profiles)

    monkeypatch.setattr(cdiqa.export, "export_bundle", fake_export)
    result = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "b"), "--checkpoint",
                                      "m.pt", "--profile", "natural=a.json", "--profile",
                                      "medical=b.json", "--halo", "160"])
    assert result.exit_code == 0, result.output
    assert seen["profiles"] == {"natural": "a.json", "medical": "b.json"}
    assert seen["checkpoint"] == Path("m.pt") and seen["config"].halo == 160
    total = sum(bundle_mod.EXPORT_STEPS.values())
    assert "export: done" in result.stderr and f"{total}/{total}" in result.stderr
    bad = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "b"), "--profile", "x"])
    assert bad.exit_code != 0 and "expected DOMAIN=HEAD.json" in str(bad.exception)
