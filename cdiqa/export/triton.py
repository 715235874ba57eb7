"""Triton Inference Server model repositories from a bundle (``iqa-export triton``).

The graph outputs masking stats and the quality head runs in numpy (docs/architecture.md), so
the GPU flavours are an ensemble of the graph and a small Python-backend head model. Every
flavour serves one model ``cdiqa`` with the same contract (``cdiqa.runtime.triton_client``)::

    ensemble (backend onnxruntime | tensorrt)              python (whole runtime in Triton)

    REPO/                                                  REPO/
      README.md             how to start tritonserver        README.md
      cdiqa_triton.json     what wrote the repository        cdiqa_triton.json
      cdiqa/config.pbtxt    ensemble: ref,dist,roi->score    cdiqa/config.pbtxt   python
      cdiqa/1/              (empty: ensembles hold no file)  cdiqa/1/model.py
      cdiqa_graph/config.pbtxt  onnxruntime_onnx |           cdiqa/1/bundle/      the bundle
                                tensorrt_plan                cdiqa/1/vendor/cdiqa torch-free
      cdiqa_graph/1/model.onnx | model_sm<cc>.plan ...                            cdiqa modules
      cdiqa_head/config.pbtxt   python: sums,sumsq,counts
      cdiqa_head/1/model.py            -> score
      cdiqa_head/1/profile.json the domain's head
      cdiqa_head/1/vendor/cdiqa numpy-only cdiqa modules
      plugins/<lib>.so          (tensorrt, when given)

The repository is written to a temporary folder beside ``out`` and renamed into place when
complete; an earlier repository at ``out`` is replaced only then.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from cdiqa.engine_format import ENGINE_MAGIC, read_engine_header
from cdiqa.errors import ConfigError, describe
from cdiqa.export.bundle import check_target
from cdiqa.export.staging import copy_bundle, replace_dir, staged
from cdiqa.manifest import (DIM_BATCH, INPUT_NAMES, PRECISIONS, GraphChoice, Manifest,
                            TensorSpec, load_manifest, select_graph)
from cdiqa.triton_layout import GRAPH_MODEL, HEAD_MODEL, MODEL, OUTPUT_SCORE, TRITON_DTYPES

Flavour = Literal["onnxruntime", "tensorrt", "python"]
Precision = Literal["fp32", "fp16", "int8"]
FLAVOURS = ("onnxruntime", "tensorrt", "python")
#: what every repository holds at its root, and what marks a folder as one
INFO_FILE = "cdiqa_triton.json"
README_FILE = "README.md"
PLUGINS_DIR = "plugins"
TRT_CACHE_DIR = "trt_cache"
#: modules each Python model needs (their cdiqa imports are followed to vendor the closure)
HEAD_ROOTS = ("cdiqa.heads", "cdiqa.masking")
SCORER_ROOTS = ("cdiqa.runtime.scorer", "cdiqa.runtime.backends.onnxruntime",
                "cdiqa.runtime.server_triton_head")
_CC = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class TritonConfig:
    """Options of ``triton_from_bundle``.

    Attributes:
        backend: "onnxruntime" (ensemble, ONNX model), "tensorrt" (ensemble, TensorRT plans)
            or "python" (one Python-backend model running the whole runtime).
        precision: "fp32"; "fp16"/"int8" through TensorRT (the ONNX model's TensorRT
            accelerator on GPU; int8 needs the domain's Q/DQ graph from ``iqa-export
            calibrate``). The graph is ``cdiqa.manifest.select_graph``'s for the domain.
        domain: the head served; None: the bundle's default domain.
        instances: model instances (per GPU with ``gpu``).
        gpu: KIND_GPU instances (else KIND_CPU).
        max_batch: Triton ``max_batch_size``.
        preferred_batch: dynamic batcher's preferred sizes; None: (max_batch // 2, max_batch).
        max_queue_delay_us: longest a request waits for a batch to fill.
        threads: ONNX Runtime intra-op threads per CPU instance; None: ORT's default.
        engines: (compute capability "9.0", plan path) pairs for the tensorrt flavour: plans
            from trtexec, or engines from ``iqa-export build`` (their header is checked
            against the domain's graph and stripped).
        plugin_library: the masking plugin's shared library the engines need (tensorrt).
        warmup: add ``model_warmup`` to the graph model (the Python models always warm
            themselves up in ``initialize``), so the first request is not slow.
    """

    backend: Flavour = "onnxruntime"
    precision: Precision = "fp32"
    domain: str | None = None
    instances: int = 1
    gpu: bool = False
    max_batch: int = 8
    preferred_batch: tuple[int, ...] | None = None
    max_queue_delay_us: int = 2000
    threads: int | None = None
    engines: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    plugin_library: str | None = None
    warmup: bool = True

    def batch_sizes(self) -> tuple[int, ...]:
        """The preferred batch sizes (the one place their default is resolved)."""
        if self.preferred_batch is not None:
            return tuple(self.preferred_batch)
        return tuple(sorted({max(1, self.max_batch // 2), self.max_batch}))


def triton_from_bundle(bundle: str | os.PathLike, out: str | os.PathLike,
                       config: TritonConfig | None = None) -> Path:
    """Write a Triton model repository for ``bundle`` at ``out``; returns ``out``.

    >>> triton_from_bundle("bundle", "repo", TritonConfig(backend="python"))  # doctest: +SKIP
    PosixPath('repo')

    Raises:
        ConfigError: incompatible options, a missing engine or plugin file, or an ``out``
            that is neither new, empty, nor an earlier repository.
        ManifestError: an invalid bundle or an unknown domain.
    """
    config = config or TritonConfig()
    manifest = load_manifest(bundle)
    domain = config.domain or manifest.default_domain
    manifest.domain_path(domain)  # ManifestError naming the choices for an unknown domain
    _check(config, manifest, domain)
    out = Path(out)
    check_target(out, INFO_FILE, "Triton repository")
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as tmp:  # removed on any failure; mode 755: Triton may run as another user
        writer = _python_repository if config.backend == "python" else _ensemble_repository
        writer(tmp, manifest, domain, config, out.resolve())
        _write_text(tmp / INFO_FILE, json.dumps(_info(manifest, domain, config), indent=2) + "\n")
        _write_text(tmp / README_FILE, readme(out.resolve(), config, manifest, domain))
        replace_dir(tmp, out)
    return out


# ---- checks ----


def _check(config: TritonConfig, manifest: Manifest, domain: str) -> None:
    """Raise ``ConfigError`` for options that do not fit together (never fixed silently)."""
    _choice("backend", config.backend, FLAVOURS)
    _choice("precision", config.precision, PRECISIONS)
    sizes = config.batch_sizes()
    if config.instances < 1 or config.max_batch < 1 or config.max_queue_delay_us < 0 or (
            not sizes or min(sizes) < 1 or max(sizes) > config.max_batch):
        raise _bad("Options", (config.instances, config.max_batch, sizes),
                   "instances >= 1, max_batch >= 1, 1 <= preferred sizes <= max_batch",
                   "Fix --instances / --max-batch")
    if config.threads is not None and config.threads < 1:
        raise _bad("Threads", config.threads, ">= 1 or None", "Pass a positive thread count")
    if config.backend == "python" and config.precision != "fp32":
        raise _bad("Precision", config.precision, "fp32 with --backend python",
                   "The python flavour runs ONNX Runtime in fp32; use --backend onnxruntime "
                   "--gpu or tensorrt for fp16/int8")
    if config.backend == "onnxruntime" and config.precision != "fp32" and not config.gpu:
        raise _bad("Precision", config.precision, "fp32 on CPU",
                   "fp16/int8 run through the TensorRT accelerator: add --gpu")
    if config.backend != "python":
        graph_of(manifest, domain, config)  # ManifestError: a graph calibrate has not written
    if config.backend == "tensorrt":
        _check_engines(config, manifest, domain)
    elif config.engines or config.plugin_library:
        raise _bad("Engines", "--engine/--plugin-library", f"only with --backend tensorrt, "
                   f"not '{config.backend}'", "Drop them or use --backend tensorrt")


def graph_of(manifest: Manifest, domain: str, config: TritonConfig) -> GraphChoice:
    """The graph the ensemble's graph model serves: portable for ONNX Runtime, whose TensorRT
    accelerator makes FP16 by a flag; the plugin form TensorRT plans are built from."""
    form = "plugin" if config.backend == "tensorrt" else "portable"
    return select_graph(manifest, domain, config.precision, form, fp16_flag=True)


def _check_engines(config: TritonConfig, manifest: Manifest, domain: str) -> None:
    if not config.gpu:
        raise _bad("Instance kind", "KIND_CPU", "KIND_GPU for --backend tensorrt",
                   "TensorRT plans run on GPUs only: add --gpu")
    if not config.engines:
        raise _bad("Engines", "none", "at least one CC=PLAN, e.g. --engine 9.0=model.plan",
                   "Build a plan for each GPU's compute capability (`iqa-export build "
                   f"{manifest.root} --domain {domain} --precision {config.precision}`, or "
                   f"trtexec --onnx={graph_of(manifest, domain, config).entry.path}) and pass "
                   "it")
    for cc, plan in config.engines:
        if not _CC.match(cc):
            raise _bad("Compute capability", repr(cc), "MAJOR.MINOR such as '9.0'",
                       "Write --engine 9.0=model.plan")
        if not Path(plan).is_file():
            raise _bad("Engine file", str(plan), "an existing TensorRT plan",
                       "Check the path of --engine")
        _check_engine_file(Path(plan), config, manifest, domain)
    if config.plugin_library and not Path(config.plugin_library).is_file():
        raise _bad("Plugin library", str(config.plugin_library), "an existing shared library",
                   "Build the masking plugin (cdiqa/kernels/masking) and pass its .so")


def _check_engine_file(plan: Path, config: TritonConfig, manifest: Manifest, domain: str
                       ) -> None:
    """An engine from ``iqa-export build`` must be of this domain's graph and precision (a
    bare plan carries no header to check)."""
    with open(plan, "rb") as f:
        if f.read(len(ENGINE_MAGIC)) != ENGINE_MAGIC:
            return
    header, _ = read_engine_header(plan.read_bytes(), plan.name)
    graph = graph_of(manifest, domain, config)
    built = (header.domain, header.precision, header.onnx_sha256[:16])
    if built != (domain, config.precision, graph.sha256[:16]):
        raise _bad("Engine", f"{plan.name} built for {built}",
                   f"{(domain, config.precision, graph.sha256[:16])} (domain, precision, "
                   f"graph {graph.entry.path})", f"Build it for the served domain: `iqa-export "
                   f"build {manifest.root} --domain {domain} --precision {config.precision}`")


def _copy_plan(plan: Path, dest: Path) -> None:
    """Copy a plan for Triton: an ``iqa-export build`` engine without its cdiqa header."""
    data = plan.read_bytes()
    if data.startswith(ENGINE_MAGIC):
        data = data[read_engine_header(data, plan.name)[1]:]
    dest.write_bytes(data)


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"The nearest is '{near[0]}'" if near else f"Pick one of {choices}"
        raise _bad(what.capitalize(), repr(value), f"one of {choices}", hint)


def _bad(what: str, got, expected, fix: str) -> ConfigError:
    return ConfigError(describe(what, "Triton repository", "options", got, expected, fix))


# ---- repositories ----


def _ensemble_repository(root: Path, manifest: Manifest, domain: str, config: TritonConfig,
                         final: Path) -> None:
    """cdiqa (ensemble) = cdiqa_graph (ONNX or TensorRT) -> cdiqa_head (Python)."""
    (root / MODEL / "1").mkdir(parents=True)
    _write_text(root / MODEL / "config.pbtxt", ensemble_config(manifest, config))
    graph = root / GRAPH_MODEL
    (graph / "1").mkdir(parents=True)
    if config.backend == "onnxruntime":
        # the domain's own graph: an adapted domain's head was fitted on its adapted graph
        shutil.copy2(graph_of(manifest, domain, config).checked_path(),
                     graph / "1" / "model.onnx")
    else:
        for cc, plan in config.engines:
            _copy_plan(Path(plan), graph / "1" / _plan_name(cc))
        if config.plugin_library:
            (root / PLUGINS_DIR).mkdir()
            shutil.copy2(config.plugin_library, root / PLUGINS_DIR / Path(
                config.plugin_library).name)
    _write_text(graph / "config.pbtxt", graph_config(manifest, domain, config, final))
    head = root / HEAD_MODEL
    (head / "1").mkdir(parents=True)
    _copy_module("cdiqa.runtime.server_triton_head", head / "1" / "model.py")
    shutil.copy2(manifest.domain_path(domain), head / "1" / "profile.json")
    vendor(head / "1" / "vendor", HEAD_ROOTS)
    _write_text(head / "config.pbtxt", head_config(manifest, domain, config))


def _python_repository(root: Path, manifest: Manifest, domain: str, config: TritonConfig,
                       final: Path) -> None:
    """cdiqa (Python backend) = the whole runtime: bundle + vendored torch-free cdiqa."""
    model = root / MODEL
    (model / "1").mkdir(parents=True)
    _copy_module("cdiqa.runtime.server_triton_scorer", model / "1" / "model.py")
    (model / "1" / "bundle").mkdir()
    copy_bundle(manifest.root, model / "1" / "bundle")  # never what links outside it
    vendor(model / "1" / "vendor", SCORER_ROOTS)
    _write_text(model / "config.pbtxt", python_config(manifest, domain, config))


# ---- config.pbtxt text ----


def _dims(spec: TensorSpec) -> list[int]:
    """Triton dims of a manifest tensor: the batch axis dropped, symbolic axes -1."""
    if not spec.shape or spec.shape[0] != DIM_BATCH:
        raise ConfigError(describe("Shape", "tensor", spec.name, spec.shape,
                                   f"a leading '{DIM_BATCH}' axis",
                                   "Re-export the bundle with `iqa-export export`"))
    return [-1 if isinstance(d, str) else int(d) for d in spec.shape[1:]]


def _dtype(spec: TensorSpec) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise ConfigError(describe("Dtype", "tensor", spec.name, spec.dtype,
                                   f"one of {sorted(TRITON_DTYPES)}", "Re-export the bundle"))
    return "TYPE_" + TRITON_DTYPES[spec.dtype]


def _io(kind: str, tensors: list[tuple[str, str, list[int]]]) -> str:
    rows = ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}'
                      for n, t, d in tensors)
    return f"{kind} [\n{rows}\n]\n"


def _specs(specs) -> list[tuple[str, str, list[int]]]:
    return [(s.name, _dtype(s), _dims(s)) for s in specs]


def _score_io() -> list[tuple[str, str, list[int]]]:
    return [(OUTPUT_SCORE, "TYPE_FP32", [1])]


def _header(name: str, kind: str, config: TritonConfig) -> str:
    return f'name: "{name}"\n{kind}\nmax_batch_size: {config.max_batch}\n'


def _instances(config: TritonConfig, gpu: bool) -> str:
    return (f"instance_group [ {{ count: {config.instances} "
            f"kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]\n")


def _batching(config: TritonConfig) -> str:
    sizes = ", ".join(map(str, config.batch_sizes()))
    return (f"dynamic_batching {{ preferred_batch_size: [ {sizes} ] "
            f"max_queue_delay_microseconds: {config.max_queue_delay_us} }}\n")


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                   for k, v in params.items())


def ensemble_config(manifest: Manifest, config: TritonConfig) -> str:
    """The ``cdiqa`` ensemble: graph inputs -> graph -> stats -> head -> score."""
    graph_in = "".join(f'input_map {{ key: "{n}" value: "{n}" }} ' for n in INPUT_NAMES)
    stats = [t.name for t in manifest.outputs]
    graph_out = "".join(f'output_map {{ key: "{n}" value: "{n}" }} ' for n in stats)
    head_in = "".join(f'input_map {{ key: "{n}" value: "{n}" }} ' for n in stats)
    head_out = f'output_map {{ key: "{OUTPUT_SCORE}" value: "{OUTPUT_SCORE}" }}'
    return (_header(MODEL, 'platform: "ensemble"', config)
            + _io("input", _specs(manifest.inputs)) + _io("output", _score_io())
            + "ensemble_scheduling { step [\n"
            + f'  {{ model_name: "{GRAPH_MODEL}" model_version: -1 {graph_in}{graph_out}}},\n'
            + f'  {{ model_name: "{HEAD_MODEL}" model_version: -1 {head_in}{head_out} }}\n'
            + "] }\n")


def graph_config(manifest: Manifest, domain: str, config: TritonConfig, final: Path) -> str:
    """``cdiqa_graph``: the ONNX model (onnxruntime_onnx) or TensorRT plans (tensorrt_plan)."""
    if config.backend == "tensorrt":
        text = _header(GRAPH_MODEL, 'platform: "tensorrt_plan"', config)
        text += "".join(f'cc_model_filenames {{ key: "{cc}" value: "{_plan_name(cc)}" }}\n'
                        for cc, _ in config.engines)
        if config.plugin_library:
            lib = final / PLUGINS_DIR / Path(config.plugin_library).name
            text = (f"# The plans hold {manifest.plugin.name} plugin nodes: start tritonserver "
                    f"with LD_PRELOAD={lib}\n# or --backend-config=tensorrt,plugins=\"{lib}\"\n"
                    + text)
    else:
        text = _header(GRAPH_MODEL, 'platform: "onnxruntime_onnx"', config)
    text += _io("input", _specs(manifest.inputs)) + _io("output", _specs(manifest.outputs))
    text += _instances(config, config.gpu) + _batching(config)
    if config.backend == "onnxruntime" and config.gpu:
        text += _trt_accelerator(config, final)
    if config.backend == "onnxruntime" and not config.gpu and config.threads:
        text += _parameters({"intra_op_thread_count": str(config.threads)})
    if config.warmup:
        text += _warmup(manifest)
    return text


def _trt_accelerator(config: TritonConfig, final: Path) -> str:
    """ONNX Runtime's TensorRT execution provider for the ONNX model on GPU.

    INT8 serves the domain's Q/DQ graph, whose scales TensorRT reads from the graph: no
    calibration table (the bundle's ``calibration/<domain>.cache`` is cdiqa's JSON of
    ranges, not TensorRT's table format).
    """
    params = {"precision_mode": config.precision.upper(), "max_workspace_size_bytes": str(1 << 30),
              "trt_engine_cache_enable": "1",
              "trt_engine_cache_path": str(final / GRAPH_MODEL / TRT_CACHE_DIR)}
    rows = "".join(f' parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items())
    return ("optimization { execution_accelerators { gpu_execution_accelerator: [\n"
            f'  {{ name: "tensorrt"{rows} }}\n] }} }}\n')


def head_config(manifest: Manifest, domain: str, config: TritonConfig) -> str:
    """``cdiqa_head``: Python backend, the domain's head on (sums, sumsq, counts)."""
    return (_header(HEAD_MODEL, 'backend: "python"', config)
            + _io("input", _specs(manifest.outputs)) + _io("output", _score_io())
            + _instances(config, False) + _batching(config)
            + _parameters({"domain": domain}))


def python_config(manifest: Manifest, domain: str, config: TritonConfig) -> str:
    """``cdiqa`` of the python flavour: Python backend running the runtime."""
    params = {"domain": domain}
    if config.threads:
        params["threads"] = str(config.threads)
    return (_header(MODEL, 'backend: "python"', config)
            + _io("input", _specs(manifest.inputs)) + _io("output", _score_io())
            + _instances(config, config.gpu) + _batching(config) + _parameters(params))


# ---- warm-up ----


def _warmup(manifest: Manifest) -> str:
    """One all-zero 64 x 64 pair: the graph's kernels are chosen before the first request.

    The roi is zero too (nothing counted): harmless for the graph, which only sums. Triton's
    ``input_data_file`` would carry a real roi, but the server tried here (2.51, nvidia-
    pytriton) fed zeros instead of the file's bytes, and the Python models must not divide
    by a zero count, so they warm themselves up in ``initialize`` instead.
    """
    size = manifest.preprocessing.min_size
    rows = []
    for spec in manifest.inputs:
        dims = [size if d == -1 else d for d in _dims(spec)]
        rows.append(f'  inputs {{ key: "{spec.name}" value: {{ data_type: {_dtype(spec)} '
                    f'dims: [ {", ".join(map(str, dims))} ] zero_data: true }} }}')
    return (f'model_warmup [ {{ name: "zeros_{size}x{size}" batch_size: 1\n' + "\n".join(rows)
            + "\n} ]\n")


# ---- files ----


def _plan_name(cc: str) -> str:
    return f"model_sm{cc.replace('.', '')}.plan"


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _module_source(name: str) -> Path | None:
    """The source file of module ``cdiqa...`` in this installation (None if not a module)."""
    import cdiqa

    base = Path(cdiqa.__file__).parent.joinpath(*name.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _copy_module(name: str, dest: Path) -> None:
    shutil.copy2(_module_source(name), dest)


def vendor_closure(roots: tuple[str, ...]) -> list[str]:
    """Every cdiqa module ``roots`` import (at any depth, function-level imports included),
    with their parent packages, found by reading the sources with ``ast``.

    A package that is only a parent (``cdiqa`` for ``cdiqa.heads``) contributes its
    module-level imports only: its functions (``cdiqa.score``, which opens the runtime) are
    never called by the vendored code."""
    todo, seen, parents = [(r, False) for r in roots], set(), set()
    while todo:
        name, parent = todo.pop()
        path = _module_source(name)
        if path is None or name in seen or (parent and name in parents):
            continue
        (parents if parent else seen).add(name)
        parts = name.split(".")
        todo += [(".".join(parts[:i]), True) for i in range(1, len(parts))]
        tree = ast.parse(path.read_text("utf-8"))
        for node in (tree.body if parent else ast.walk(tree)):
            if isinstance(node, ast.Import):
                todo += [(a.name, False) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                todo += [(n, False) for n in [node.module]
                         + [f"{node.module}.{a.name}" for a in node.names]]
        todo = [(n, p) for n, p in todo if n == "cdiqa" or n.startswith("cdiqa.")]
    return sorted(seen | parents)


def vendor(dest: Path, roots: tuple[str, ...]) -> list[str]:
    """Copy the closure of ``roots`` to ``dest/cdiqa/...``; returns the module names."""
    import cdiqa

    base = Path(cdiqa.__file__).parent.parent
    names = vendor_closure(roots)
    for name in names:
        src = _module_source(name)
        target = dest / src.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return names


def _info(manifest: Manifest, domain: str, config: TritonConfig) -> dict:
    from cdiqa import __version__

    return {"flavour": config.backend, "model": MODEL, "model_id": manifest.model_id,
            "domain": domain, "precision": config.precision, "gpu": config.gpu,
            "instances": config.instances, "max_batch": config.max_batch,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cdiqa": __version__}


def readme(repo: Path, config: TritonConfig, manifest: Manifest, domain: str) -> str:
    """The repository's README: what it serves and the tritonserver command line."""
    cmd = f"tritonserver --model-repository={repo}"
    lines = [f"# cdiqa Triton repository ({config.backend}, {config.precision}, domain "
             f"'{domain}')", "", f"Model `{MODEL}`: inputs {', '.join(INPUT_NAMES)} "
             f"(see config.pbtxt), output `{OUTPUT_SCORE}` (B, 1) in [0, 1]. Written by cdiqa "
             f"from bundle {manifest.model_id}. Client: `cdiqa.runtime.triton_client."
             "TritonScorer`.", "", "Start:", "", f"    {cmd}"]
    if config.backend == "tensorrt" and config.plugin_library:
        lib = repo / PLUGINS_DIR / Path(config.plugin_library).name
        lines += ["", f"The plans contain {manifest.plugin.name} plugin nodes: load the "
                  "plugin library into Triton, either", "",
                  f"    LD_PRELOAD={lib} {cmd}", "", "or", "",
                  f"    {cmd} --backend-config=tensorrt,plugins=\"{lib}\""]
    if config.backend == "python":
        lines += ["", "Triton's Python environment needs numpy and onnxruntime "
                  "(onnxruntime-gpu for --gpu); cdiqa itself is vendored in cdiqa/1/vendor."]
    else:
        lines += ["", f"`{HEAD_MODEL}` runs in the Python backend and needs numpy only."]
    if config.backend == "onnxruntime" and config.gpu:
        lines += ["", "The TensorRT accelerator caches engines in "
                  f"{repo / GRAPH_MODEL / TRT_CACHE_DIR} (absolute path in config.pbtxt: "
                  "regenerate the repository after moving it)."]
    return "\n".join(lines) + "\n"
