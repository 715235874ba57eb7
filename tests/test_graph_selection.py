"""cdiqa.manifest.select_graph: the one rule for which graph serves (domain, precision, form)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdiqa.errors import ConfigError, ManifestError
from cdiqa.manifest import (FILE_NAMES, DomainModels, FileEntry, Manifest, PluginSpec,
                            Preprocessing, ScoreSpec, TilingSpec, select_graph, tensor_specs)

ROOT = Path("/bundle")


def _entry(path: str) -> FileEntry:
    return FileEntry(path, path.replace("/", "_").ljust(64, "0"))


def _manifest(domain_models: dict[str, DomainModels]) -> Manifest:
    """A manifest of placeholder entries (select_graph reads no file)."""
    inputs, outputs = tensor_specs(16)
    return Manifest(
        schema_version=1, model_id="m", created="", model_config={}, feature_dim=32, opset=18,
        precision="fp32", files={k: _entry(n) for k, n in FILE_NAMES.items()}, inputs=inputs,
        outputs=outputs, preprocessing=Preprocessing(), score=ScoreSpec(),
        domains={d: _entry(f"profiles/{d}.json") for d in ("natural", "underwater", "medical")},
        default_domain="natural", tiling=TilingSpec(),
        plugin=PluginSpec("CdiqaMasking", "cdiqa", "1", "trt.plugins", ("e", "a")),
        versions={}, domain_models=domain_models, root=ROOT)


ADAPTED = {k: _entry(f"domains/underwater/{n}") for k, n in (
    ("fp32", "model.onnx"), ("fp32_plugin", "model.plugin.onnx"), ("int8", "model.int8.onnx"),
    ("fp16", "model.fp16.onnx"))}
M = _manifest({"underwater": DomainModels(ADAPTED, adapted=True),
               "medical": DomainModels({"fp32": ADAPTED["fp32"]}, adapted=True)})


@pytest.mark.parametrize("domain, precision, form, flag, path, typed, plugin", [
    (None, "fp32", "portable", False, "model.onnx", True, False),
    (None, "fp32", "plugin", False, "model.plugin.onnx", True, True),
    # no FP16 graph: the FP32 graph of the form, FP16 left to the consumer's flag
    (None, "fp16", "plugin", True, "model.plugin.onnx", False, True),
    (None, "fp16", "portable", True, "model.onnx", False, False),
    # an adapted domain: its own graphs in every form and precision, never the base graph
    ("underwater", "fp32", "portable", False, "domains/underwater/model.onnx", True, False),
    ("underwater", "fp32", "plugin", False, "domains/underwater/model.plugin.onnx", True, True),
    ("underwater", "int8", "plugin", False, "domains/underwater/model.int8.onnx", True, False),
    ("underwater", "fp16", "plugin", True, "domains/underwater/model.fp16.onnx", True, False),
    ("underwater", "fp16", "portable", False, "domains/underwater/model.fp16.onnx", True, False),
])
def test_the_rule(domain, precision, form, flag, path, typed, plugin) -> None:
    g = select_graph(M, domain, precision, form, fp16_flag=flag)
    assert (g.path, g.strongly_typed, g.uses_plugin) == (ROOT / path, typed, plugin)
    assert g.sha256 == g.entry.sha256 and g.entry.path == path


def test_model_entry_is_the_portable_choice() -> None:
    for domain in ("natural", "underwater"):
        for precision in ("fp32", "int8", "fp16") if domain == "underwater" else ("fp32",):
            assert M.model_entry(domain, precision) == select_graph(M, domain, precision).entry


@pytest.mark.parametrize("args, error, match", [
    (("natural", "fp16", "plugin"), ManifestError,
     r"Precision for domain 'natural': got 'fp16', expected one of \['fp32'\]\. Run "
     r"`iqa-export calibrate /bundle --domain natural` to build it"),
    (("natural", "int8", "portable"), ManifestError, r"got 'int8'.*iqa-export calibrate"),
    (("medical", "fp32", "plugin"), ManifestError,
     r"Graph for domain 'medical': got an adapted graph without its plugin form, expected "
     r"domains/medical/model.plugin.onnx\. Recalibrate"),
    (("nope", "fp32", "portable"), ManifestError, r"Domain for bundle .*'nope'"),
    (("natural", "bf16", "portable"), ManifestError, r"Precision for bundle .*got 'bf16'"),
    (("natural", "fp32", "trt"), ConfigError, r"Form for graph 'natural': got 'trt'"),
])
def test_refusals_name_the_fix(args, error, match) -> None:
    with pytest.raises(error, match=match):
        select_graph(M, *args)
