"""Which of a bundle's graphs serves (domain, precision, form): decided here and nowhere else.

::

    precision  form       the domain has                    graph
    fp32       portable   an adapted graph                  domains/<d>/model.onnx
                          none                              model.onnx
    fp32       plugin     an adapted graph                  domains/<d>/model.plugin.onnx
                          none                              model.plugin.onnx
    int8       either     model.int8.onnx (Q/DQ)            domains/<d>/model.int8.onnx
    fp16       either     model.fp16.onnx (explicit casts)  domains/<d>/model.fp16.onnx
                          none, and ``fp16_flag``           the fp32 graph of the form, FP16
                                                            left to the consumer's flag

The form says what the consumer can run: "portable" (ONNX Runtime, Triton's ONNX model) or
"plugin" (TensorRT, whose masking nodes become the ``CdiqaMasking`` plugin). The INT8 and FP16
graphs exist in the portable form only and are run strongly typed. The head fitted for an
adapted domain belongs to its adapted graph, so an adapted domain is never served by the
bundle's base graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdiqa.errors import ConfigError, ManifestError, describe
from cdiqa.manifest import FILE_ONNX, FILE_ONNX_PLUGIN, PRECISIONS, FileEntry, Manifest

FORMS = ("portable", "plugin")
_FP32_KEY = {"portable": ("fp32", FILE_ONNX), "plugin": ("fp32_plugin", FILE_ONNX_PLUGIN)}


@dataclass(frozen=True)
class GraphChoice:
    """The graph that serves (domain, precision, form).

    ``strongly_typed``: the graph holds its own precisions (False: FP16 is the consumer's
    flag on an FP32 graph); ``uses_plugin``: its masking is ``CdiqaMasking`` nodes.
    """

    entry: FileEntry
    path: Path
    strongly_typed: bool
    uses_plugin: bool

    @property
    def sha256(self) -> str:
        """The graph file's sha256 (as the manifest lists it)."""
        return self.entry.sha256


def select_graph(manifest: Manifest, domain: str | None = None, precision: str = "fp32",
                 form: str = "portable", *, fp16_flag: bool = False) -> GraphChoice:
    """The graph that serves ``domain`` (None: the default) at ``precision`` in ``form``.

    ``fp16_flag``: the consumer can run an FP32 graph in FP16 by a flag (TensorRT 10's
    ``BuilderFlag.FP16``, ONNX Runtime's TensorRT provider), so a domain without an FP16
    graph is served by its FP32 one.

    Raises:
        ManifestError: an unknown domain or precision, or a graph the bundle does not have
            (the message gives the command that writes it).
        ConfigError: an unknown form.
    """
    domain = domain or manifest.default_domain
    if precision not in PRECISIONS:
        raise ManifestError(describe("Precision", "bundle", manifest.root, repr(precision),
                                     f"one of {PRECISIONS}", "Pick one of them"))
    if form not in FORMS:
        raise ConfigError(describe("Form", "graph", domain, repr(form), f"one of {FORMS}",
                                   "Pick one of them"))
    manifest.domain_path(domain)  # unknown domain: the manifest's message
    models = manifest.domain_models.get(domain)
    files = models.files if models else {}
    if precision in files and precision != "fp32":
        return _choice(manifest, files[precision], True, False)
    if precision == "fp32" or (precision == "fp16" and fp16_flag):
        return _choice(manifest, _fp32_entry(manifest, domain, files, form),
                       precision == "fp32", form == "plugin")
    have = sorted(["fp32"] + [p for p in PRECISIONS if p in files and p != "fp32"])
    raise ManifestError(describe("Precision", "domain", domain, repr(precision),
                                 f"one of {have}", f"Run `iqa-export calibrate "
                                 f"{manifest.root} --domain {domain}` to build it"))


def _fp32_entry(manifest: Manifest, domain: str, files: dict[str, FileEntry], form: str
                ) -> FileEntry:
    own, base = _FP32_KEY[form]
    if own in files:
        return files[own]
    if "fp32" in files:  # adapted, but this form was not written: the base graph would be wrong
        raise ManifestError(describe(
            "Graph", "domain", domain, "an adapted graph without its plugin form",
            f"domains/{domain}/model.plugin.onnx", f"Recalibrate the domain with the plugin "
            f"form (`iqa-export calibrate {manifest.root} --domain {domain}`, or "
            "CalibConfig(plugin=True))"))
    if base not in manifest.files:
        raise ManifestError(describe("File", "bundle", manifest.root, f"no {base} entry",
                                     f"the {form} graph", "Re-export with `iqa-export export`"))
    return manifest.files[base]


def _choice(manifest: Manifest, entry: FileEntry, strongly_typed: bool, uses_plugin: bool
            ) -> GraphChoice:
    return GraphChoice(entry, manifest._resolve(entry), strongly_typed, uses_plugin)


__all__ = ["FORMS", "GraphChoice", "select_graph"]
