"""The bundle manifest: a typed, validated description of an exported model (stdlib + numpy).

A bundle is a directory::

    bundle/
      manifest.json          this file's ``Manifest``, written last (atomic rename)
      model.onnx             masking decomposed into standard ONNX ops: runs on any ONNX Runtime
      model.plugin.onnx      the same graph, each masking module one ``CdiqaMasking`` node
      model.maps.onnx        (ref, dist) -> the masking maps before pooling, for quality maps
      model.pt               the torch checkpoint the graphs came from (for ``iqa-export check``)
      profiles/<domain>.json a quality head (``cdiqa.heads``) per imaging domain
      domains/<domain>/      written by ``iqa-export calibrate`` (optional, see docs/calibration.md):
        model.onnx           the domain-adapted graph (FP32), model.plugin.onnx its plugin form,
        model.pt             its checkpoint, model.int8.onnx (Q/DQ), model.fp16.onnx
      calibration/<domain>.cache  INT8 activation ranges (JSON) the Q/DQ model was built from

Every file is listed with its sha256; ``load_manifest`` refuses a bundle with a missing or
altered file, an unknown ``schema_version`` or a missing field, naming what is wrong.

The graph's tensor names are defined here and nowhere else (``INPUT_*``, ``OUTPUT_*``).
Which of the graphs serves (domain, precision, form) is decided here too, by
``select_graph``, for every consumer (ONNX Runtime, TensorRT builds and sessions, Triton).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from cdiqa.errors import ConfigError, ManifestError, describe
from cdiqa.files import read_bounded

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
#: largest manifest or profile JSON read (bytes): far above a real one (a few KB), so that a
#: damaged or hostile file is refused instead of read into memory
MAX_JSON_BYTES = 16 << 20

# ---- graph tensor names (the one place they are spelled) ----
INPUT_REF = "ref"
INPUT_DIST = "dist"
INPUT_ROI = "roi"
OUTPUT_SUMS = "sums"
OUTPUT_SUMSQ = "sumsq"
OUTPUT_COUNTS = "counts"
INPUT_NAMES = (INPUT_REF, INPUT_DIST, INPUT_ROI)
OUTPUT_NAMES = (OUTPUT_SUMS, OUTPUT_SUMSQ, OUTPUT_COUNTS)
#: outputs of the maps graph (``model.maps.onnx``): one masking map n per scale, ``map<s>``
OUTPUT_MAP = "map"

# ---- symbolic dimensions ----
DIM_BATCH = "batch"
DIM_HEIGHT = "height"
DIM_WIDTH = "width"

# ---- keys of ``Manifest.files`` and the file names an export writes ----
FILE_ONNX = "onnx"
FILE_ONNX_PLUGIN = "onnx_plugin"
FILE_CHECKPOINT = "checkpoint"
#: optional: the per-scale masking maps before pooling (``Scorer.quality_map``); bundles
#: exported before it existed lack the entry
FILE_ONNX_MAPS = "onnx_maps"
FILE_NAMES = {FILE_ONNX: "model.onnx", FILE_ONNX_PLUGIN: "model.plugin.onnx",
              FILE_CHECKPOINT: "model.pt", FILE_ONNX_MAPS: "model.maps.onnx"}
PROFILES_DIR = "profiles"
DEFAULT_DOMAIN = "natural"
#: the default model (cdiqa/assets/default) exported as a bundle, for torch-free scoring;
#: rebuilt with `iqa-export export --out cdiqa/assets/default/bundle` whenever the model changes
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "default" / "bundle"
DOMAINS_DIR = "domains"
CALIBRATION_DIR = "calibration"
#: precisions a graph of the bundle can be in (``Manifest.model_path``)
PRECISIONS = ("fp32", "int8", "fp16")
#: keys of ``DomainModels.files`` and the file names inside ``domains/<domain>/``
DOMAIN_FILE_NAMES = {"fp32": "model.onnx", "fp32_plugin": "model.plugin.onnx",
                     "checkpoint": "model.pt", "int8": "model.int8.onnx",
                     "fp16": "model.fp16.onnx"}

_FIX = "Re-export the bundle with `iqa-export export`"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` holds ints and symbolic dim names (strings)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    layout: str
    value_range: tuple[float, float] | None = None

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def dynamic_axes(self) -> dict[int, str]:
        """{axis: symbolic name} of the dimensions that vary."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle: its path relative to the bundle root and its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Preprocessing:
    """What the graph's image inputs must hold; conversions happen in ``cdiqa.images``."""

    colour: str = "RGB"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    layout: str = "NCHW"
    min_size: int = 64
    conversions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreSpec:
    """What the runtime's score means."""

    direction: str = "higher_is_better"
    value_range: tuple[float, float] = (0.0, 1.0)
    identical: float = 1.0


@dataclass(frozen=True)
class TilingSpec:
    """How a large image may be tiled: interiors aligned to ``alignment``, ``halo`` of context.

    The tile crops start on multiples of ``alignment`` (the coarsest stride) so that every
    scale's feature grid of a tile coincides with the untiled one.
    """

    alignment: int = 32
    halo: int = 128
    strides: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class PluginSpec:
    """The masking op as a TensorRT plugin node in ``model.plugin.onnx``: ``count`` nodes of
    op_type ``name`` in ONNX domain ``onnx_domain``, with string attributes
    ``plugin_namespace``/``plugin_version`` and the op's ``attributes``."""

    name: str
    namespace: str
    version: str
    onnx_domain: str
    inputs: tuple[str, ...]
    attributes: dict[str, int] = field(default_factory=dict)
    count: int = 0


@dataclass(frozen=True)
class GateResult:
    """Accuracy of a reduced-precision graph against the FP32 one on a domain's held-out pairs.

    ``srcc_vs_fp32``: SRCC of its scores against the FP32 scores; ``mean_abs_diff``: mean
    |score - FP32 score|; ``srcc_ladder``/``srcc_ladder_fp32``: SRCC of its / the FP32 scores
    against the known severity order of the pairs. ``passed``: both drops (1 - srcc_vs_fp32 and
    srcc_ladder_fp32 - srcc_ladder) are at most ``max_drop``; ``accepted``: passed, or the
    user accepted the drop (``--accept-drop``).
    """

    precision: str
    pairs: int
    srcc_vs_fp32: float
    mean_abs_diff: float
    srcc_ladder: float
    srcc_ladder_fp32: float
    max_drop: float
    passed: bool
    accepted: bool


@dataclass(frozen=True)
class DomainModels:
    """The graphs ``iqa-export calibrate`` wrote for one domain (``domains/<domain>/``).

    ``files`` keys: "fp32" (adapted graph; absent: the bundle's ``model.onnx`` serves the
    domain), "fp32_plugin", "checkpoint", "int8", "fp16". ``calibration_method``: how the
    INT8 ranges were chosen; ``gates``: precision -> its accuracy gate.
    """

    files: dict[str, FileEntry]
    adapted: bool
    calibration_method: str | None = None
    gates: dict[str, GateResult] = field(default_factory=dict)
    created: str = ""


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to know about a bundle. ``root`` is where it was loaded from."""

    schema_version: int
    model_id: str
    created: str
    model_config: dict[str, Any]
    feature_dim: int
    opset: int
    precision: str
    files: dict[str, FileEntry]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing
    score: ScoreSpec
    domains: dict[str, FileEntry]
    default_domain: str
    tiling: TilingSpec
    plugin: PluginSpec
    versions: dict[str, str]
    calibration: dict[str, FileEntry] = field(default_factory=dict)
    domain_models: dict[str, DomainModels] = field(default_factory=dict)
    #: TensorRT engines written by ``iqa-export build``, keyed "<domain>/<precision>/<sm_XY>"
    #: (``cdiqa.engine_format.engine_key``); each file starts with its header
    engines: dict[str, FileEntry] = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False, repr=False)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor: {axis: symbolic name}} over inputs and outputs."""
        return {t.name: t.dynamic_axes() for t in self.inputs + self.outputs}

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name``."""
        return {t.name: t for t in self.inputs}[name]

    def path(self, key: str) -> Path:
        """Absolute path of ``files[key]`` (``ManifestError`` if the bundle has no such file)."""
        if key not in self.files:
            raise ManifestError(describe("File", "bundle", self.root, f"no '{key}' entry",
                                         f"one of {sorted(self.files)}", _FIX))
        return self._resolve(self.files[key])

    def domain_path(self, domain: str) -> Path:
        """Absolute path of the profile of ``domain``."""
        if domain not in self.domains:
            import difflib

            near = difflib.get_close_matches(domain, list(self.domains), n=1)
            hint = f"Did you mean '{near[0]}'?" if near else "Export the bundle with that profile"
            raise ManifestError(describe("Domain", "bundle", self.root, repr(domain),
                                         f"one of {sorted(self.domains)}", hint))
        return self._resolve(self.domains[domain])

    def model_entry(self, domain: str | None = None, precision: str = "fp32") -> FileEntry:
        """The portable graph that serves ``domain`` (None: the default) at ``precision``
        (the rule: ``select_graph``)."""
        return select_graph(self, domain, precision).entry

    def model_path(self, domain: str | None = None, precision: str = "fp32") -> Path:
        """Absolute path of ``model_entry(domain, precision)``."""
        return self._resolve(self.model_entry(domain, precision))

    def _resolve(self, entry: FileEntry) -> Path:
        if self.root is None:
            raise ManifestError("Bundle root for manifest: got None, expected a directory. "
                                "Load the manifest with load_manifest(bundle).")
        return self.root / entry.path

    def entries(self) -> dict[str, FileEntry]:
        """Every file the manifest lists, keyed by a readable label."""
        out = dict(self.files)
        out.update({f"profile:{d}": e for d, e in self.domains.items()})
        out.update({f"calibration:{d}": e for d, e in self.calibration.items()})
        out.update({f"engine:{k}": e for k, e in self.engines.items()})
        out.update({f"domain:{d}:{k}": e for d, m in self.domain_models.items()
                    for k, e in m.files.items()})
        return out

    def to_dict(self) -> dict:
        """JSON-friendly form (without ``root``)."""
        d = asdict(self)
        d.pop("root")
        return d


# ---- which graph serves (domain, precision, form): decided here and nowhere else ----
#
# precision  form       the domain has                    graph
# fp32       portable   an adapted graph                  domains/<d>/model.onnx
#                       none                              model.onnx
# fp32       plugin     an adapted graph                  domains/<d>/model.plugin.onnx
#                       none                              model.plugin.onnx
# int8       either     model.int8.onnx (Q/DQ)            domains/<d>/model.int8.onnx
# fp16       either     model.fp16.onnx (explicit casts)  domains/<d>/model.fp16.onnx
#                       none, and ``fp16_flag``           the fp32 graph of the form, FP16
#                                                         left to the consumer's flag
#
# The form says what the consumer runs: "portable" (ONNX Runtime, Triton's ONNX model) or
# "plugin" (TensorRT, whose masking nodes become the CdiqaMasking plugin). INT8 and FP16
# graphs exist in the portable form only, run strongly typed. An adapted domain's head was
# fitted on its adapted graph, so it is never served by the bundle's base graph.

GRAPH_FORMS = ("portable", "plugin")
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

    def checked_path(self) -> Path:
        """``path``, once it is known to be a regular file a backend can read to its end
        (``checked_file``): what every backend opens."""
        return checked_file(self.path, self.entry.path, "graph", MAX_GRAPH_BYTES)


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
    if form not in GRAPH_FORMS:
        raise ConfigError(describe("Form", "graph", domain, repr(form), f"one of {GRAPH_FORMS}",
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


# ---- hashing and files ----


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(root: str | os.PathLike, relpath: str) -> FileEntry:
    """A ``FileEntry`` for ``root/relpath`` with its current hash."""
    return FileEntry(str(PurePosixPath(relpath)), sha256_file(Path(root) / relpath))


#: largest graph file handed to a backend (2 GiB, protobuf's limit on one ONNX file)
MAX_GRAPH_BYTES = 2 ** 31


def checked_file(path: Path, relpath: str, label: str, limit: int | None = None) -> Path:
    """``path`` if it is a regular file of at most ``limit`` bytes, else ``ManifestError``.

    Bundles loaded with ``verify=False`` reach a backend with nothing else having looked at
    their files: a FIFO or a link to a device would block it or never end, a huge file
    would be read whole. ``stat`` itself never blocks.
    """
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        got = "no such file" if st is None else "not a regular file"
        raise ManifestError(describe("Missing file", "bundle file", relpath, got,
                                     f"the {label} file listed in {MANIFEST_FILE}",
                                     f"{_FIX} or restore the file"))
    if limit is not None and st.st_size > limit:
        raise ManifestError(describe("Size", "bundle file", relpath, f"{st.st_size} bytes",
                                     f"at most {limit} bytes for a {label} file",
                                     f"{_FIX} or restore the file"))
    return path


def verify_files(manifest: Manifest) -> None:
    """Raise ``ManifestError`` naming the first listed file that is missing or altered."""
    for label, entry in manifest.entries().items():
        path = checked_file(manifest._resolve(entry), entry.path, label)
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ManifestError(describe("sha256", "bundle file", entry.path, actual[:16] + "…",
                                         entry.sha256[:16] + "…",
                                         f"The file was altered or corrupted; {_FIX[0].lower()}"
                                         f"{_FIX[1:]}"))


# ---- JSON in and out ----


def save_manifest(manifest: Manifest, bundle: str | os.PathLike) -> Path:
    """Write ``bundle/manifest.json`` atomically (temp file + rename)."""
    from cdiqa.files import atomic_write

    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False).encode()
    return atomic_write(Path(bundle) / MANIFEST_FILE, lambda f: f.write(text + b"\n"))


def load_manifest(bundle: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """Read and validate ``bundle/manifest.json``; with ``verify`` also check every file's hash.

    Raises:
        ManifestError: no manifest, invalid JSON, unknown ``schema_version``, a missing or
            unknown field, a path outside the bundle, or (``verify``) a missing/altered file.
    """
    root = Path(bundle)
    path = root / MANIFEST_FILE
    if not path.exists():
        raise ManifestError(describe("Manifest", "bundle", root, "no manifest.json",
                                     "a directory written by `iqa-export export`",
                                     "Check the path or re-export the bundle"))
    raw = read_json(path, "manifest")
    manifest = manifest_from_dict(raw, where=str(path), root=root)
    if verify:
        verify_files(manifest)
    return manifest


def manifest_from_dict(raw: Any, *, where: str = MANIFEST_FILE, root: Path | None = None
                       ) -> Manifest:
    """Validate a parsed manifest and build the ``Manifest`` (no file checks)."""
    if not isinstance(raw, dict):
        raise ManifestError(describe("Content", "manifest", where, type(raw).__name__,
                                     "a JSON object", _FIX))
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # true == 1 == 1.0 in Python
        shown = (version if type(version) is int
                 else f"{json.dumps(version)} (JSON {_json(version)})")
        raise ManifestError(describe("schema_version", "manifest", where, shown,
                                     SCHEMA_VERSION, f"{_FIX} using this cdiqa, or load it with "
                                     "the cdiqa version that wrote it"))
    d = _fields(Manifest, raw, "manifest", where)
    for key in ("files", "domains", "calibration", "engines"):
        if key in d:
            d[key] = {k: _entry(v, f"{key}.{k}", where)
                      for k, v in _typed(d[key], dict, key, where).items()}
    for key in ("inputs", "outputs"):
        d[key] = tuple(_tensor(t, f"{key}[{i}]", where)
                       for i, t in enumerate(_typed(d[key], list, key, where)))
    d["preprocessing"] = _sub(Preprocessing, d["preprocessing"], "preprocessing", where)
    d["score"] = _sub(ScoreSpec, d["score"], "score", where)
    d["tiling"] = _sub(TilingSpec, d["tiling"], "tiling", where)
    d["plugin"] = _sub(PluginSpec, d["plugin"], "plugin", where)
    if "domain_models" in d:
        d["domain_models"] = {k: _domain_models(v, f"domain_models.{k}", where)
                              for k, v in _typed(d["domain_models"], dict, "domain_models",
                                                 where).items()}
    if FILE_ONNX not in d["files"]:  # the graph every domain falls back to
        raise ManifestError(describe("Missing field", "manifest", where,
                                     f"no '{FILE_ONNX}' in 'files'",
                                     f"an entry for {FILE_NAMES[FILE_ONNX]}", _FIX))
    if d["default_domain"] not in d["domains"]:
        raise ManifestError(describe("default_domain", "manifest", where, d["default_domain"],
                                     f"one of {sorted(d['domains'])}", _FIX))
    return Manifest(**d, root=root)


def _fields(cls, raw: Any, what: str, where: str) -> dict:
    """Check ``raw`` has every required field of ``cls`` and no unknown one."""
    raw = _typed(raw, dict, what, where)
    known = [f for f in fields(cls) if f.name != "root"]
    required = {f.name for f in known if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(raw))
    if missing:
        raise ManifestError(describe("Missing field", "manifest", where,
                                     f"no {', '.join(map(repr, missing))} in '{what}'",
                                     f"every field of schema {SCHEMA_VERSION}", _FIX))
    unknown = sorted(set(raw) - {f.name for f in known})
    if unknown:
        raise ManifestError(describe("Unknown field", "manifest", where,
                                     f"{', '.join(map(repr, unknown))} in '{what}'",
                                     f"only the fields of schema {SCHEMA_VERSION}", _FIX))
    hints = _hints(cls)
    for name, value in raw.items():
        if not _matches(value, hints[name]):
            key = name if what == "manifest" else f"{what}.{name}"
            raise ManifestError(describe("Type", "manifest", where,
                                         f"{_json(value)} for '{key}'", _spell(hints[name]),
                                         _FIX))
    return dict(raw)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    """Whether parsed JSON ``value`` fits the annotation ``hint`` (the dataclasses' field
    types are the schema). A nested dataclass passes here: its own reader checks it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or is_dataclass(hint):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1])
                                               for k, v in value.items())
    if origin is tuple:  # JSON arrays
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int in Python, never in the manifest
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _spell(hint: Any) -> str:
    if typing.get_args(hint):
        return str(hint).replace("typing.", "").replace(f"{__name__}.", "")
    return "null" if hint is type(None) else hint.__name__


def _json(value: Any) -> str:
    """The JSON type of a parsed value, as the message names it."""
    return {bool: "bool", int: "int", float: "float", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _typed(value: Any, typ: type, what: str, where: str):
    if not isinstance(value, typ):
        raise ManifestError(describe("Type", "manifest", where,
                                     f"{_json(value)} for '{what}'",
                                     f"{typ.__name__}", _FIX))
    return value


def _sub(cls, raw: Any, what: str, where: str):
    d = _fields(cls, raw, what, where)
    for f in fields(cls):
        if f.name in d and isinstance(d[f.name], list):
            d[f.name] = tuple(d[f.name])
    return cls(**d)


def _entry(raw: Any, what: str, where: str) -> FileEntry:
    entry = _sub(FileEntry, raw, what, where)
    p = PurePosixPath(entry.path)
    if p.is_absolute() or ".." in p.parts or not entry.path:
        raise ManifestError(describe("Path", "manifest", where, f"'{entry.path}' for '{what}'",
                                     "a relative path inside the bundle", _FIX))
    if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
        raise ManifestError(describe("sha256", "manifest", where,
                                     f"'{entry.sha256[:70]}' for '{what}'",
                                     "64 lowercase hex digits", _FIX))
    return entry


def _domain_models(raw: Any, what: str, where: str) -> DomainModels:
    d = _fields(DomainModels, raw, what, where)
    d["files"] = {k: _entry(v, f"{what}.files.{k}", where)
                  for k, v in _typed(d["files"], dict, f"{what}.files", where).items()}
    d["gates"] = {k: _sub(GateResult, v, f"{what}.gates.{k}", where)
                  for k, v in _typed(d.get("gates", {}), dict, f"{what}.gates", where).items()}
    return DomainModels(**d)


def _tensor(raw: Any, what: str, where: str) -> TensorSpec:
    return _sub(TensorSpec, raw, what, where)


def tensor_specs(features: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's (inputs, outputs) contract for ``features`` = D channels over all scales.

    See docs/architecture.md: images (B, 3, H, W) float32 in [0, 1], roi (B, 4) int32,
    outputs (B, D) float32.
    """
    image = (DIM_BATCH, 3, DIM_HEIGHT, DIM_WIDTH)
    inputs = (TensorSpec(INPUT_REF, "float32", image, "NCHW", (0.0, 1.0)),
              TensorSpec(INPUT_DIST, "float32", image, "NCHW", (0.0, 1.0)),
              TensorSpec(INPUT_ROI, "int32", (DIM_BATCH, 4), "[y0, x0, y1, x1)", None))
    outputs = tuple(TensorSpec(n, "float32", (DIM_BATCH, features), "ND", None)
                    for n in OUTPUT_NAMES)
    return inputs, outputs


def read_json(path: str | os.PathLike, what: str) -> Mapping:
    """Read a JSON object from a bundle file (``ManifestError`` naming it if unreadable).

    At most ``MAX_JSON_BYTES`` of a regular file are read: a FIFO, a link to a device or a
    huge file is refused without blocking.
    """
    try:
        d = json.loads(read_bounded(path, MAX_JSON_BYTES))
    except RecursionError:
        raise ManifestError(describe("JSON", what, path, "arrays or objects nested too deep",
                                     "a JSON object written by cdiqa", _FIX)) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ManifestError(describe("JSON", what, path, str(reason).splitlines()[0],
                                     "a readable JSON object", _FIX)) from None
    if not isinstance(d, dict):
        raise ManifestError(describe("Content", what, path, type(d).__name__, "a JSON object",
                                     _FIX))
    return d
