"""Build a TensorRT engine from a bundle's ONNX (``iqa-export build``).

::

    bundle ─► graph for (domain, precision) ─► strongly typed network (ONNX parser)
          ─► optimization profile (batch, height, width) + timing cache + compat flags
          ─► plan ─► header + plan ─► bundle/engines/<domain>.<precision>.<sm_XY>.engine
                                    └► manifest.engines["<domain>/<precision>/<sm_XY>"]

Graphs (``cdiqa.manifest.select_graph``, plugin form): FP32 is ``model.plugin.onnx``, or the
domain's adapted ``fp32_plugin``, whose masking nodes become the ``CdiqaMasking`` plugin; FP16
and INT8 are the domain's graphs written by ``iqa-export calibrate`` (FP16 with explicit casts, INT8
with Q/DQ), built strongly typed so TensorRT runs exactly the precisions written in the graph.
Without a calibrated FP16 graph, TensorRT 10 (which still has ``BuilderFlag.FP16``) builds the
plugin graph weakly typed with FP16 allowed; TensorRT 11 removed that flag, and the message
says to run ``iqa-export calibrate``.

The plugin: ``cdiqa.kernels.plugin_qdp.register()`` (TensorRT >= 10.8; the AOT kernel is baked
into the plan), or a C++ plugin library (``BuildConfig.plugin_library``, built from
``cdiqa/kernels/masking/plugin``) loaded into the plugin registry.

TensorRT 10 and 11 are both supported by feature detection (``hasattr`` on the flag enums),
never by version numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from cdiqa._lazy import require_tensorrt
from cdiqa.engine_format import (EngineHeader, engine_key, pack_engine, plugin_hash,
                                 read_engine_header)
from cdiqa.errors import ConfigError, KernelError, describe
from cdiqa.export.engine_cache import (cache_lookup, cache_store, default_cache_dir,
                                       engine_cache_key)
from cdiqa.gpu import gpu_info
from cdiqa.manifest import (INPUT_DIST, INPUT_REF, INPUT_ROI, PRECISIONS, GraphChoice,
                            Manifest, file_entry, load_manifest, save_manifest, select_graph)
from cdiqa.masking import MIN_SIZE

Precision = Literal["fp32", "fp16", "int8"]
ENGINES_DIR = "engines"
#: One (batch, height, width) triple.
Shape = tuple[int, int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """An optimization profile: min / opt / max of (batch, height, width) of ref and dist."""

    min: Shape = (1, MIN_SIZE, MIN_SIZE)
    opt: Shape = (1, 384, 512)
    max: Shape = (8, 1088, 1920)

    def check(self) -> "ShapeProfile":
        """Raise ``ConfigError`` unless min <= opt <= max and H, W >= 64."""
        for name in ("min", "opt", "max"):
            b, h, w = getattr(self, name)
            if b < 1 or h < MIN_SIZE or w < MIN_SIZE:
                raise ConfigError(describe("Shape", "profile", name, f"{b}x{h}x{w}",
                                           f"batch >= 1 and height, width >= {MIN_SIZE}",
                                           "Pass BxHxW, e.g. --min-shape 1x64x64"))
        if not all(lo <= op <= hi for lo, op, hi in zip(self.min, self.opt, self.max)):
            raise ConfigError(describe("Order", "profile", "min/opt/max",
                                       f"{self.min} / {self.opt} / {self.max}",
                                       "min <= opt <= max in every dimension",
                                       "Reorder the shapes"))
        return self

    def tensors(self) -> dict[str, list[list[int]]]:
        """{input: [min, opt, max] shape} of the graph's three inputs."""
        image = lambda s: [s[0], 3, s[1], s[2]]  # noqa: E731
        return {INPUT_REF: [image(self.min), image(self.opt), image(self.max)],
                INPUT_DIST: [image(self.min), image(self.opt), image(self.max)],
                INPUT_ROI: [[self.min[0], 4], [self.opt[0], 4], [self.max[0], 4]]}


def parse_shape(text: str, option: str = "shape") -> Shape:
    """``"4x384x512"`` -> (4, 384, 512) (batch x height x width)."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(describe("Shape", "option", option, repr(text), "BxHxW, e.g. 1x64x64",
                                   "Write batch, height and width joined by x"))
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def parse_profile(text: str) -> ShapeProfile:
    """``"1x64x64:4x384x512:8x1088x1920"`` (min:opt:max) -> ``ShapeProfile``."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(describe("Profile", "option", "--shapes", repr(text), "MIN:OPT:MAX",
                                   "Write e.g. 1x64x64:4x384x512:8x1088x1920"))
    return ShapeProfile(*(parse_shape(p, "--shapes") for p in parts)).check()


def profile_from_options(shapes: str | None = None, min_shape: str | None = None,
                         opt_shape: str | None = None, max_shape: str | None = None
                         ) -> ShapeProfile:
    """The profile of ``--shapes MIN:OPT:MAX`` or of ``--min/opt/max-shape`` (not both);
    a shape not given keeps ``ShapeProfile``'s default."""
    each = {"min": min_shape, "opt": opt_shape, "max": max_shape}
    if shapes is not None:
        if any(each.values()):
            raise ConfigError(describe("Options", "command", "build", "--shapes and "
                                       "--min/--opt/--max-shape", "one of the two forms",
                                       "Pass either --shapes or the three shapes"))
        return parse_profile(shapes)
    given = {k: parse_shape(v, f"--{k}-shape") for k, v in each.items() if v}
    return replace(ShapeProfile(), **given).check()


@dataclass(frozen=True)
class BuildConfig:
    """What ``engine_from_bundle`` builds.

    Attributes:
        precision: "fp32", "fp16" or "int8" (the graph that serves it: ``select_graph``).
        domain: whose graph; None: the bundle's default domain.
        profile: the optimization profile.
        version_compatible: ``BuilderFlag.VERSION_COMPATIBLE`` (runs on later TensorRT of the
            same major version, with the lean runtime).
        hardware_compatible: ``HardwareCompatibilityLevel.AMPERE_PLUS`` (any GPU >= sm_80).
        timing_cache: file read before and written after the build; None: no timing cache.
        plugin_library: a C++ plugin library to load instead of registering the QDP plugin.
        cache_dir: engine cache folder; None: ``$CDIQA_CACHE/engines``.
        workspace_mb: builder memory pool for workspace; None: TensorRT's default.
    """

    precision: Precision = "fp32"
    domain: str | None = None
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    version_compatible: bool = False
    hardware_compatible: bool = False
    timing_cache: str | None = None
    plugin_library: str | None = None
    cache_dir: str | None = None
    workspace_mb: int | None = None

    def check(self) -> "BuildConfig":
        """Raise ``ConfigError`` for an unknown precision or a bad profile."""
        if self.precision not in PRECISIONS:
            raise ConfigError(describe("Precision", "option", "--precision", repr(self.precision),
                                       f"one of {PRECISIONS}", "Pick one of them"))
        self.profile.check()
        if self.plugin_library and not Path(self.plugin_library).is_file():
            raise ConfigError(describe("Plugin library", "option", "--plugin-library",
                                       self.plugin_library, "an existing .so file", "Build it "
                                       "(cdiqa/kernels/masking/plugin/README.md)"))
        return self


@dataclass(frozen=True)
class BuildResult:
    """What ``engine_from_bundle`` did."""

    path: Path
    key: str
    header: EngineHeader
    cached: bool
    seconds: float

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"path": str(self.path), "key": self.key, "cached": self.cached,
                "seconds": round(self.seconds, 2), "header": asdict(self.header)}


def engine_from_bundle(bundle: str | os.PathLike, config: BuildConfig) -> BuildResult:
    """Build (or take from the cache) the engine for ``config`` on this GPU, write it into
    the bundle atomically and record it in the manifest.

    Raises:
        BackendUnavailable: TensorRT, cuda-python or a GPU is missing (one line, what to
            install).
        ConfigError, ManifestError: bad options, or a graph the bundle does not have.
    """
    config.check()
    trt = require_tensorrt("building a TensorRT engine")
    manifest = load_manifest(bundle)
    gpu = gpu_info(0)
    domain = config.domain or manifest.default_domain
    graph = select_graph(manifest, domain, config.precision, "plugin",
                         fp16_flag=hasattr(trt.BuilderFlag, "FP16"))
    header = EngineHeader(
        trt_version=trt.__version__, gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, plugin_hash=plugin_hash(manifest.plugin),
        onnx_sha256=graph.sha256, precision=config.precision, domain=domain,
        profile=config.profile.tensors(), version_compatible=config.version_compatible,
        hardware_compatible=config.hardware_compatible)
    key = engine_cache_key(onnx_sha256=header.onnx_sha256, plugin_hash=header.plugin_hash,
                           trt_version=header.trt_version, gpu_name=header.gpu_name,
                           compute_capability=header.compute_capability,
                           precision=header.precision, profile=header.profile,
                           version_compatible=header.version_compatible,
                           hardware_compatible=header.hardware_compatible)
    header = replace(header, cache_key=key)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    start = time.perf_counter()
    data = cache_lookup(cache_dir, key)
    cached = data is not None
    if cached:
        read_engine_header(data, f"{key}.engine")  # a damaged entry raises, naming it
    else:
        data = pack_engine(header, plan_from_onnx(trt, graph, config))
        cache_store(cache_dir, key, data)
    path = _write_into_bundle(manifest, engine_key(domain, config.precision, gpu.arch), data)
    return BuildResult(path, key, header, cached, time.perf_counter() - start)


def _write_into_bundle(manifest: Manifest, key: str, data: bytes) -> Path:
    from cdiqa.files import atomic_write

    rel = f"{ENGINES_DIR}/{key.replace('/', '.')}.engine"
    path = atomic_write(manifest.root / rel, lambda f: f.write(data))
    engines = {**manifest.engines, key: file_entry(manifest.root, rel)}
    save_manifest(replace(manifest, engines=engines), manifest.root)
    return path


def plan_from_onnx(trt, graph: GraphChoice, config: BuildConfig) -> bytes:
    """TensorRT's serialized plan for ``graph`` (needs TensorRT and a GPU)."""
    logger = trt.Logger(trt.Logger.WARNING)
    _register_plugin(trt, config, graph)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, graph))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph.checked_path())):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise KernelError(describe("ONNX parse", "graph", graph.path.name, "; ".join(errors[:3]),
                                  "a graph TensorRT can import", "Check the plugin is "
                                  "registered and the graph passes `iqa-export check`"))
    builder_config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in config.profile.tensors().items():
        profile.set_shape(name, lo, opt, hi)
    builder_config.add_optimization_profile(profile)
    _set_flags(trt, builder_config, graph, config)
    cache = _load_timing_cache(builder_config, config.timing_cache)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise KernelError(describe("Build", "graph", graph.path.name, "no engine",
                                  "a serialized plan", "Read the TensorRT log above"))
    if config.timing_cache:
        from cdiqa.files import atomic_write

        blob = bytes(cache.serialize())
        atomic_write(config.timing_cache, lambda f: f.write(blob))
    return bytes(plan)


def _register_plugin(trt, config: BuildConfig, graph: GraphChoice) -> None:
    if not graph.uses_plugin:
        return
    if config.plugin_library:
        trt.get_plugin_registry().load_library(str(config.plugin_library))
        return
    from cdiqa.kernels.plugin_qdp import register

    register()


def _network_flags(trt, graph: GraphChoice) -> int:
    flags = 0
    names = trt.NetworkDefinitionCreationFlag
    if graph.strongly_typed and hasattr(names, "STRONGLY_TYPED"):
        flags |= 1 << int(names.STRONGLY_TYPED)
    if hasattr(names, "PREFER_AOT_PYTHON_PLUGINS"):  # 10.8+: bake the QDP kernel into the plan
        flags |= 1 << int(names.PREFER_AOT_PYTHON_PLUGINS)
    return flags


def _set_flags(trt, builder_config, graph: GraphChoice, config: BuildConfig) -> None:
    flag = trt.BuilderFlag
    if config.precision == "fp16" and not graph.strongly_typed:
        builder_config.set_flag(flag.FP16)  # TensorRT 10 only (select_graph checked)
    if config.precision == "fp32" and hasattr(flag, "TF32"):
        # TF32 convolutions (on by default) keep 10 mantissa bits; e = d(D) - d(R) is a
        # small difference of two codes, where that rounding would dominate
        builder_config.clear_flag(flag.TF32)
    if config.version_compatible:
        builder_config.set_flag(flag.VERSION_COMPATIBLE)
        if config.plugin_library:  # a version-compatible plan carries its plugin library
            builder_config.plugins_to_serialize = [str(config.plugin_library)]
    if config.hardware_compatible:
        builder_config.hardware_compatibility_level = \
            trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if config.workspace_mb:
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                             int(config.workspace_mb) << 20)


def _load_timing_cache(builder_config, path: str | None):
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = builder_config.create_timing_cache(data)
    builder_config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


__all__ = ["BuildConfig", "BuildResult", "ENGINES_DIR", "PRECISIONS", "ShapeProfile",
           "engine_from_bundle", "parse_profile", "parse_shape", "plan_from_onnx",
           "profile_from_options"]
