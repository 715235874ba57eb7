"""Triton model repositories: layout, configs parsed by tritonclient's protobuf, options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import ConfigError, ManifestError
from cdiqa.export.triton import INFO_FILE, TritonConfig, triton_from_bundle, vendor_closure
from cdiqa.manifest import OUTPUT_NAMES, load_manifest, save_manifest, sha256_file
from cdiqa.triton_layout import GRAPH_MODEL, HEAD_MODEL, MODEL, OUTPUT_SCORE

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                         reason="tritonclient is not installed (cdiqa[triton])")
text_format = pytest.importorskip("google.protobuf.text_format")

_TYPES = {"float32": pb.TYPE_FP32, "int32": pb.TYPE_INT32}


def parse(model_dir: Path):
    """config.pbtxt as tritonclient's ModelConfig (raises on any unknown field or syntax)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())


def assert_io(tensors, specs) -> None:
    """Names, dtypes and dims (batch axis dropped, symbolic -1) equal the manifest's."""
    assert [t.name for t in tensors] == [s.name for s in specs]
    for t, s in zip(tensors, specs):
        assert t.data_type == _TYPES[s.dtype], t.name
        assert list(t.dims) == [-1 if isinstance(d, str) else d for d in s.shape[1:]], t.name
        assert s.shape[0] == "batch"


@pytest.fixture(scope="module")
def manifest(tiny_bundle):
    return load_manifest(tiny_bundle)


def test_ensemble_repository_matches_the_manifest(tiny_bundle, manifest, tmp_path):
    out = triton_from_bundle(tiny_bundle, tmp_path / "repo",
                             TritonConfig(domain="medical", instances=2, threads=1))
    ens, graph, head = (parse(out / m) for m in (MODEL, GRAPH_MODEL, HEAD_MODEL))

    assert ens.platform == "ensemble" and ens.max_batch_size == 8
    assert_io(ens.input, manifest.inputs)
    assert [(o.name, o.data_type, list(o.dims)) for o in ens.output] == [
        (OUTPUT_SCORE, pb.TYPE_FP32, [1])]
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [GRAPH_MODEL, HEAD_MODEL]
    assert dict(steps[0].input_map) == {t.name: t.name for t in manifest.inputs}
    assert dict(steps[0].output_map) == dict(steps[1].input_map) == {
        t.name: t.name for t in manifest.outputs}
    assert dict(steps[1].output_map) == {OUTPUT_SCORE: OUTPUT_SCORE}

    assert graph.platform == "onnxruntime_onnx" and graph.max_batch_size == 8
    assert_io(graph.input, manifest.inputs)
    assert_io(graph.output, manifest.outputs)
    assert [(g.kind, g.count) for g in graph.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 2)]
    assert list(graph.dynamic_batching.preferred_batch_size) == [4, 8]
    assert graph.dynamic_batching.max_queue_delay_microseconds == 2000
    assert graph.parameters["intra_op_thread_count"].string_value == "1"
    assert not graph.optimization.execution_accelerators.gpu_execution_accelerator
    warm = graph.model_warmup[0]
    assert warm.batch_size == 1 and set(warm.inputs) == {t.name for t in manifest.inputs}
    assert list(warm.inputs["ref"].dims) == [3, 64, 64] and warm.inputs["roi"].zero_data

    assert head.backend == "python"
    assert_io(head.input, manifest.outputs)
    assert head.parameters["domain"].string_value == "medical"

    assert sha256_file(out / GRAPH_MODEL / "1" / "model.onnx") == manifest.files["onnx"].sha256
    assert sha256_file(out / HEAD_MODEL / "1" / "profile.json") == manifest.domains[
        "medical"].sha256
    assert (out / HEAD_MODEL / "1" / "model.py").read_text().startswith(
        '"""Triton Python-backend model ``cdiqa_head``')
    assert (out / MODEL / "1").is_dir() and not any((out / MODEL / "1").iterdir())
    info = json.loads((out / INFO_FILE).read_text())
    assert (info["flavour"], info["domain"], info["model_id"]) == (
        "onnxruntime", "medical", manifest.model_id)
    assert "tritonserver --model-repository=" in (out / "README.md").read_text()


def test_gpu_onnx_model_gets_the_tensorrt_accelerator(tiny_bundle, tmp_path):
    out = triton_from_bundle(tiny_bundle, tmp_path / "repo",
                             TritonConfig(gpu=True, precision="fp16", max_batch=16))
    graph = parse(out / GRAPH_MODEL)
    assert graph.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert list(graph.dynamic_batching.preferred_batch_size) == [8, 16]
    (acc,) = graph.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    assert acc.parameters["precision_mode"] == "FP16"
    assert acc.parameters["trt_engine_cache_enable"] == "1"
    assert acc.parameters["trt_engine_cache_path"] == str(
        (tmp_path / "repo").resolve() / GRAPH_MODEL / "trt_cache")
    assert parse(out / HEAD_MODEL).instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_int8_needs_the_domain_int8_graph(tiny_bundle, tmp_path):
    with pytest.raises(ManifestError, match=r"Precision for domain 'natural': got 'int8', "
                                            r"expected one of \['fp32'\]\. Run `iqa-export "
                                            r"calibrate .* --domain natural` to build it"):
        triton_from_bundle(tiny_bundle, tmp_path / "repo", TritonConfig(gpu=True,
                                                                        precision="int8"))
    assert [p.name for p in tmp_path.iterdir()] == []


# ---- an adapted domain: every flavour serves its own graph with its head ----


def _pairs():
    rng = np.random.default_rng(7)
    refs = [rng.random((64, 80, 3), np.float32) for _ in range(3)]
    return refs, [np.clip(r + 0.08 * rng.standard_normal(r.shape, np.float32), 0, 1)
                  for r in refs]


def _ensemble_scores(repo: Path, refs, dists) -> np.ndarray:
    """The ensemble's two steps as the repository names them: its graph model's model.onnx on
    ONNX Runtime, then its head model's profile.json on the stats."""
    import onnxruntime as ort

    from cdiqa.heads import load_head, score_from_stats
    from cdiqa.runtime.preprocess import feed

    session = ort.InferenceSession(str(repo / GRAPH_MODEL / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    stats = session.run(list(OUTPUT_NAMES), feed(refs, dists))
    head = load_head(json.loads((repo / HEAD_MODEL / "1" / "profile.json").read_text()))
    return score_from_stats(head, *stats)


def _runtime_scores(bundle: Path, refs, dists, precision: str = "fp32") -> np.ndarray:
    from cdiqa.runtime import Scorer, SessionOptions

    with Scorer.load(bundle, "onnxruntime", domain="underwater", precision=precision,
                     options=SessionOptions(threads=1)) as s:
        return s.score_batch(refs, dists)


def test_adapted_domain_ensemble_scores_like_the_runtime(adapted_bundle, tmp_path):
    from cdiqa.tolerances import tolerance

    m = load_manifest(adapted_bundle)
    refs, dists = _pairs()
    atol = tolerance("served_score").atol
    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo",
                              TritonConfig(domain="underwater", threads=1))
    graph = sha256_file(repo / GRAPH_MODEL / "1" / "model.onnx")
    assert graph == m.domain_models["underwater"].files["fp32"].sha256 != m.files["onnx"].sha256
    expected = _runtime_scores(adapted_bundle, refs, dists)
    np.testing.assert_allclose(_ensemble_scores(repo, refs, dists), expected, atol=atol, rtol=0)
    # the check can fail: the base graph with the adapted head (the old repository) scores off
    base = triton_from_bundle(_without_adapted_graphs(adapted_bundle, tmp_path), tmp_path / "base",
                              TritonConfig(domain="underwater", threads=1))
    assert np.max(np.abs(_ensemble_scores(base, refs, dists) - expected)) > atol


def _without_adapted_graphs(bundle: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle`` whose adapted domain lost its graphs (only its head is left)."""
    import shutil

    out = tmp_path / "unadapted"
    shutil.copytree(bundle, out)
    m = load_manifest(out)
    save_manifest(replace(m, domain_models={}, calibration={}), out)
    return out


def test_adapted_domain_int8_ensemble_serves_the_qdq_graph(adapted_bundle, tmp_path):
    from cdiqa.tolerances import tolerance

    m = load_manifest(adapted_bundle)
    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo",
                              TritonConfig(domain="underwater", gpu=True, precision="int8"))
    assert sha256_file(repo / GRAPH_MODEL / "1" / "model.onnx") == \
        m.domain_models["underwater"].files["int8"].sha256
    (acc,) = parse(repo / GRAPH_MODEL).optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.parameters["precision_mode"] == "INT8"
    # the Q/DQ graph holds its scales: no calibration table (the bundle's cache is JSON)
    assert not any(k.startswith("int8_") for k in acc.parameters)
    assert not (repo / GRAPH_MODEL / "trt_cache").exists()
    refs, dists = _pairs()  # the graph it names, on ONNX Runtime's CPU, as the runtime runs it
    np.testing.assert_allclose(_ensemble_scores(repo, refs, dists),
                               _runtime_scores(adapted_bundle, refs, dists, "int8"),
                               atol=tolerance("served_score").atol, rtol=0)


def test_adapted_domain_tensorrt_flavour_takes_engines_of_its_graph(adapted_bundle, tmp_path):
    from cdiqa.engine_format import EngineHeader, pack_engine

    m = load_manifest(adapted_bundle)
    plugin = m.domain_models["underwater"].files["fp32_plugin"].sha256

    def engine(name: str, onnx_sha256: str) -> Path:
        header = EngineHeader(trt_version="10.8.0", gpu_name="G", compute_capability="9.0",
                              plugin_hash="p", onnx_sha256=onnx_sha256, precision="fp32",
                              domain="underwater")
        path = tmp_path / name
        path.write_bytes(pack_engine(header, b"plan bytes"))
        return path

    config = TritonConfig(backend="tensorrt", gpu=True, domain="underwater",
                          engines=(("9.0", str(engine("ok.engine", plugin))),))
    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo", config)
    assert (repo / GRAPH_MODEL / "1" / "model_sm90.plan").read_bytes() == b"plan bytes"
    assert sha256_file(repo / HEAD_MODEL / "1" / "profile.json") == m.domains["underwater"].sha256
    stale = replace(config, engines=(("9.0", str(engine("base.engine",
                                                       m.files["onnx_plugin"].sha256))),))
    with pytest.raises(ConfigError, match=r"Engine for Triton repository 'options': got "
                                          r"base.engine built for .*domains/underwater/model"
                                          r"\.plugin\.onnx.*iqa-export build .* --domain "
                                          r"underwater --precision fp32"):
        triton_from_bundle(adapted_bundle, tmp_path / "repo2", stale)


def test_adapted_domain_python_flavour_scores_like_the_runtime(adapted_bundle, tmp_path):
    from cdiqa.tolerances import tolerance

    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo",
                              TritonConfig(backend="python", domain="underwater", threads=1))
    version = repo / MODEL / "1"
    domain = parse(repo / MODEL).parameters["domain"].string_value
    code = ("import sys, json, numpy as np; sys.path.insert(0, sys.argv[1])\n"
            "from cdiqa.runtime import Scorer, SessionOptions\n"
            "d = np.load(sys.argv[3])\n"
            "s = Scorer.load(sys.argv[2], 'onnxruntime', domain=sys.argv[4],\n"
            "                options=SessionOptions(threads=1))\n"
            "print(json.dumps(s.score_batch(list(d['r']), list(d['d'])).tolist()))\n")
    refs, dists = _pairs()
    np.savez(tmp_path / "pairs.npz", r=np.stack(refs), d=np.stack(dists))
    res = subprocess.run([sys.executable, "-c", code, str(version / "vendor"),
                          str(version / "bundle"), str(tmp_path / "pairs.npz"), domain],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(json.loads(res.stdout), _runtime_scores(adapted_bundle, refs,
                                                                       dists),
                               atol=tolerance("served_score").atol, rtol=0)


def test_tensorrt_flavour_names_plans_and_plugin(tiny_bundle, manifest, tmp_path):
    plan, lib = tmp_path / "engine.plan", tmp_path / "libcdiqa_masking.so"
    plan.write_bytes(b"plan bytes")  # copied, never run here
    lib.write_bytes(b"\x7fELF")
    out = triton_from_bundle(tiny_bundle, tmp_path / "repo", TritonConfig(
        backend="tensorrt", gpu=True, engines=(("9.0", str(plan)), ("8.0", str(plan))),
        plugin_library=str(lib)))
    graph = parse(out / GRAPH_MODEL)
    assert graph.platform == "tensorrt_plan"
    assert dict(graph.cc_model_filenames) == {"9.0": "model_sm90.plan", "8.0": "model_sm80.plan"}
    assert (out / GRAPH_MODEL / "1" / "model_sm90.plan").read_bytes() == b"plan bytes"
    assert_io(graph.input, manifest.inputs)
    installed = (tmp_path / "repo").resolve() / "plugins" / "libcdiqa_masking.so"
    assert installed.read_bytes() == b"\x7fELF"
    text = (out / GRAPH_MODEL / "config.pbtxt").read_text()
    assert f"LD_PRELOAD={installed}" in text
    readme = (out / "README.md").read_text()
    assert f"--backend-config=tensorrt,plugins=\"{installed}\"" in readme
    assert f"LD_PRELOAD={installed} tritonserver" in readme
    assert manifest.plugin.name in readme


def test_python_flavour_runs_the_vendored_runtime(tiny_bundle, manifest, tmp_path):
    out = triton_from_bundle(tiny_bundle, tmp_path / "repo",
                             TritonConfig(backend="python", threads=1, gpu=False))
    (model,) = [p.name for p in out.iterdir() if p.is_dir()]
    cfg = parse(out / model)
    assert model == MODEL and cfg.backend == "python"
    assert_io(cfg.input, manifest.inputs)
    assert cfg.parameters["domain"].string_value == "natural"
    assert cfg.parameters["threads"].string_value == "1"
    version = out / MODEL / "1"
    assert load_manifest(version / "bundle").model_id == manifest.model_id  # hashes verified
    # The vendored copy alone (not this checkout) scores like the installed runtime.
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1])\n"
        "import cdiqa; from cdiqa.runtime import Scorer, SessionOptions\n"
        "import cdiqa.runtime.server_triton_head\n"
        "r = np.random.default_rng(0).random((64, 72, 3), np.float32)\n"
        "s = Scorer.load(sys.argv[2], 'onnxruntime', options=SessionOptions(threads=1))\n"
        "q = s.score(r, np.clip(r + 0.1, 0, 1))\n"
        "outside = [n for n, m in sys.modules.items() if n.split('.')[0] == 'cdiqa'\n"
        "           and not getattr(m, '__file__', sys.argv[1]).startswith(sys.argv[1])]\n"
        "assert not outside and 'torch' not in sys.modules, outside\n"
        "print(q)\n")
    res = subprocess.run([sys.executable, "-c", code, str(version / "vendor"),
                          str(version / "bundle")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    from cdiqa.runtime import Scorer, SessionOptions
    from cdiqa.tolerances import tolerance

    r = np.random.default_rng(0).random((64, 72, 3), np.float32)
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        expected = s.score(r, np.clip(r + 0.1, 0, 1))
    assert abs(float(res.stdout) - expected) <= tolerance("onnx_score").atol


def test_head_vendor_is_numpy_only():
    names = vendor_closure(("cdiqa.heads", "cdiqa.masking"))
    assert "cdiqa.heads" in names and "cdiqa.errors" in names and "cdiqa" in names
    assert not any(n.startswith(("cdiqa.runtime", "cdiqa.model", "cdiqa.export")) for n in names)


@pytest.mark.parametrize("config, match", [
    (TritonConfig(backend="python", precision="fp16"),
     r"Precision for Triton repository 'options': got fp16, expected fp32 with --backend python"),
    (TritonConfig(precision="int8"), r"got int8, expected fp32 on CPU\. fp16/int8 run through "
                                     r"the TensorRT accelerator: add --gpu"),
    (TritonConfig(backend="tensorrt", gpu=True),
     r"Engines for Triton repository 'options': got none, expected at least one CC=PLAN"),
    (TritonConfig(backend="tensorrt", engines=(("9.0", "x.plan"),)),
     r"got KIND_CPU, expected KIND_GPU for --backend tensorrt\. TensorRT plans run on GPUs"),
    (TritonConfig(backend="tensorrt", gpu=True, engines=(("sm90", "x.plan"),)),
     r"Compute capability .*got 'sm90', expected MAJOR\.MINOR"),
    (TritonConfig(backend="tensorrt", gpu=True, engines=(("9.0", "/no/such.plan"),)),
     r"Engine file .*got /no/such\.plan, expected an existing TensorRT plan"),
    (TritonConfig(engines=(("9.0", "x.plan"),)), r"only with --backend tensorrt, not 'onnxruntime'"),
    (TritonConfig(backend="onnxrt"), r"Backend .*got 'onnxrt'.*The nearest is 'onnxruntime'"),
    (TritonConfig(instances=0), r"Options .*expected instances >= 1"),
    (TritonConfig(preferred_batch=(16,)), r"1 <= preferred sizes <= max_batch"),
])
def test_incompatible_options_raise_config_error(tiny_bundle, tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        triton_from_bundle(tiny_bundle, tmp_path / "repo", config)
    assert not (tmp_path / "repo").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp folder left behind


def test_unknown_domain_names_the_choices(tiny_bundle, tmp_path):
    with pytest.raises(ManifestError, match=r"Domain for bundle .*got 'medic'.*'medical'"):
        triton_from_bundle(tiny_bundle, tmp_path / "repo", TritonConfig(domain="medic"))


def test_rewrite_replaces_only_an_earlier_repository(tiny_bundle, tmp_path):
    out = tmp_path / "repo"
    triton_from_bundle(tiny_bundle, out)
    triton_from_bundle(tiny_bundle, out, TritonConfig(backend="python"))
    assert json.loads((out / INFO_FILE).read_text())["flavour"] == "python"
    assert not (out / GRAPH_MODEL).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"Output for Triton repository .*other'.*Choose "
                                          r"another --out"):
        triton_from_bundle(tiny_bundle, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_writes_a_repository_and_reports_bad_options(tiny_bundle, tmp_path):
    cli = [sys.executable, "-m", "cdiqa.cli", "triton", str(tiny_bundle)]
    ok = subprocess.run(cli + ["--out", str(tmp_path / "repo"), "--backend", "python"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert f"wrote {tmp_path / 'repo'} (python, fp32; model 'cdiqa')" in ok.stdout
    bad = subprocess.run(cli + ["--out", str(tmp_path / "r2"), "--backend", "tensorrt",
                                "--gpu", "--engine", "model.plan"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "error: Option for --engine: got ['model.plan'], expected CC=PLAN" in bad.stderr
