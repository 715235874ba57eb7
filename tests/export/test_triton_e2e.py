"""End to end: a real tritonserver serving repositories from ``iqa-export triton``.

The server is the CPU build inside nvidia-pytriton's wheel (Python backend only). It needs:

- the Python backend stub matching this Python (``python_backend_stubs/<major.minor>``) and
  this Python's shared ``libpython`` on ``LD_LIBRARY_PATH``, with the wheel's own libraries;
- a Python environment for the stub with numpy < 2: pytriton 0.7's stub is built against
  numpy 1.x and hands numpy 2 models corrupt arrays (strides of 0, zeroed int32 inputs).
  The stub finds its environment through ``PATH``; this test takes it from
  ``CDIQA_TRITON_PYTHON_ENV`` or ``<sys.prefix>/triton-env``, a venv with ``numpy<2`` whose
  site-packages end with a ``.pth`` line naming this venv's site-packages (for onnxruntime).

Where one of these is missing the tests skip with the reason; the server is never faked.
The ensemble's graph model needs Triton's onnxruntime backend, which this build lacks, so
the ensemble flavour is checked through its head model alone (loaded explicitly), fed the
stats of the graph the repository holds. An adapted domain (its own graph and head) is
served by both flavours too.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from cdiqa.export.triton import TritonConfig, triton_from_bundle
from cdiqa.manifest import OUTPUT_NAMES
from cdiqa.runtime import Scorer, SessionOptions
from cdiqa.runtime.preprocess import feed
from cdiqa.runtime.triton_client import TritonError, TritonScorer
from cdiqa.tolerances import tolerance
from cdiqa.triton_layout import GRAPH_MODEL, HEAD_MODEL, OUTPUT_SCORE

pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (cdiqa[triton])")
pytestmark = pytest.mark.slow

STARTUP_S = 60


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton is not installed: `pip install --no-deps nvidia-pytriton` "
                    "provides a CPU tritonserver with the Python backend")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def _libpython_dir() -> str:
    libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (Path(libdir) / name).is_file():
        pytest.skip(f"this Python ({sys.executable}) has no shared libpython, which Triton's "
                    "Python backend stub loads")
    return libdir


def _stub_env() -> Path:
    env = Path(os.environ.get("CDIQA_TRITON_PYTHON_ENV", Path(sys.prefix) / "triton-env"))
    python = env / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no Python environment for Triton's stub at {env}: pytriton 0.7's stub "
                    "needs numpy<2 (`python -m venv ENV && ENV/bin/pip install 'numpy<2'`, add "
                    "a .pth naming this venv's site-packages, set CDIQA_TRITON_PYTHON_ENV=ENV)")
    probe = subprocess.run([str(python), "-c", "import numpy, onnxruntime; "
                            "print(numpy.__version__)"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"the stub environment {env} cannot import numpy and onnxruntime: "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    if int(probe.stdout.split(".")[0]) >= 2:
        pytest.skip(f"the stub environment {env} has numpy {probe.stdout.strip()}; pytriton "
                    "0.7's stub is built for numpy<2 and would corrupt tensors")
    return env


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Triton:
    """A tritonserver process on loopback ports, started and stopped by a test."""

    def __init__(self, repo: Path, workdir: Path, extra: list[str]) -> None:
        dist, libpython, env_dir = _pytriton_dir(), _libpython_dir(), _stub_env()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not (dist / "bin" / "tritonserver").is_file() or not stub.is_file():
            pytest.skip(f"nvidia-pytriton at {dist} lacks tritonserver or a stub for Python "
                        f"{version}")
        backends = workdir / "backends" / "python"  # the stub must sit beside the backend
        backends.mkdir(parents=True)
        for f in (dist / "backends" / "python").iterdir():
            (backends / f.name).symlink_to(f)
        (backends / "triton_python_backend_stub").symlink_to(stub)
        self.http, self.grpc, metrics = _free_ports(3)
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PATH": f"{env_dir / 'bin'}:{os.environ.get('PATH', '')}",
               "LD_LIBRARY_PATH": f"{libpython}:{dist.parent.parent / 'nvidia_pytriton.libs'}"}
        self.log = workdir / "tritonserver.log"
        cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={repo}",
               f"--backend-directory={workdir / 'backends'}", "--http-address=127.0.0.1",
               "--grpc-address=127.0.0.1", f"--http-port={self.http}",
               f"--grpc-port={self.grpc}", f"--metrics-port={metrics}",
               "--exit-timeout-secs=10", *extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, model: str) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            with TritonScorer(f"127.0.0.1:{self.http}", model=model, timeout=5) as client:
                if client.is_ready():  # (an open connection would delay the server's exit)
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        text = self.log.read_text(errors="replace")
        self.stop()
        if "Started HTTPService" not in text and "failed to load" not in text:
            pytest.skip(f"tritonserver did not start: {text[-1500:]}")
        pytest.fail(f"tritonserver started but model '{model}' is not ready:\n{text[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _pairs():
    rng = np.random.default_rng(7)
    out = []
    for h, w in ((64, 80), (64, 80), (96, 64)):
        r = rng.random((h, w, 3), np.float32)
        out.append((r, np.clip(r + 0.08 * rng.standard_normal(r.shape, np.float32), 0, 1)))
    out.append((out[0][0], out[0][0]))
    return out


@pytest.fixture(scope="module")
def scorer(tiny_bundle):
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        yield s


@pytest.fixture(scope="module")
def python_flavour(tiny_bundle, tmp_path_factory):
    work = tmp_path_factory.mktemp("triton-python")
    repo = triton_from_bundle(tiny_bundle, work / "repo", TritonConfig(backend="python",
                                                                      threads=1))
    server = Triton(repo, work, [])
    server.wait_ready("cdiqa")
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_python_flavour_scores_like_the_runtime(python_flavour, scorer, protocol):
    port = python_flavour.http if protocol == "http" else python_flavour.grpc
    pairs = _pairs()
    refs, dists = [p[0] for p in pairs], [p[1] for p in pairs]
    with TritonScorer(f"127.0.0.1:{port}", protocol) as client:
        served = client.score_batch(refs, dists)
        single = client.score(refs[2], dists[2])
    expected = scorer.score_batch(refs, dists)
    atol = tolerance("served_score").atol
    np.testing.assert_allclose(served, expected, atol=atol, rtol=0)
    assert abs(single - expected[2]) <= atol
    assert served[-1] == 1.0  # identical images


def test_python_flavour_reports_model_errors(python_flavour):
    r = np.random.default_rng(0).random((64, 64, 3), np.float32)
    inputs = feed([r], [r], roi=np.zeros((1, 4), np.int32))  # nothing counted
    with TritonScorer(f"127.0.0.1:{python_flavour.http}") as client:
        with pytest.raises(TritonError, match=r"Inference for Triton model 'cdiqa': got "
                                              r"ShapeError: Value for tensor 'counts'"):
            client.infer(inputs)
        assert client.score(r, r) == 1.0  # still serving


def _served_head(repo, workdir, stats) -> np.ndarray:
    """Scores of the repository's head model, alone on a tritonserver, for (sums, sumsq,
    counts)."""
    import tritonclient.http as http

    server = Triton(repo, workdir, ["--model-control-mode=explicit",
                                    f"--load-model={HEAD_MODEL}"])
    try:
        server.wait_ready(HEAD_MODEL)
        client = http.InferenceServerClient(f"127.0.0.1:{server.http}")
        inputs = []
        for name, array in zip(OUTPUT_NAMES, stats):
            t = http.InferInput(name, list(array.shape), "FP32")
            t.set_data_from_numpy(array)
            inputs.append(t)
        served = client.infer(HEAD_MODEL, inputs).as_numpy(OUTPUT_SCORE).reshape(-1)
        client.close()
    finally:
        server.stop()
    return served


def test_ensemble_head_model_scores_graph_stats(tiny_bundle, scorer, tmp_path):
    repo = triton_from_bundle(tiny_bundle, tmp_path / "repo", TritonConfig(domain="medical"))
    pairs = _pairs()[:2]
    stats = scorer.stats(feed([p[0] for p in pairs], [p[1] for p in pairs]))
    served = _served_head(repo, tmp_path, stats)
    expected = scorer.with_domain("medical").score_batch([p[0] for p in pairs],
                                                         [p[1] for p in pairs])
    np.testing.assert_allclose(served, expected, atol=tolerance("served_score").atol, rtol=0)


# ---- an adapted domain (its own graph and head) served like the runtime serves it ----


def _runtime(bundle, domain: str, refs, dists) -> np.ndarray:
    with Scorer.load(bundle, "onnxruntime", domain=domain,
                     options=SessionOptions(threads=1)) as s:
        return s.score_batch(refs, dists)


def test_adapted_domain_python_flavour_scores_like_the_runtime(adapted_bundle, tmp_path):
    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo",
                              TritonConfig(backend="python", domain="underwater", threads=1))
    server = Triton(repo, tmp_path, [])
    try:
        server.wait_ready("cdiqa")
        pairs = _pairs()
        refs, dists = [p[0] for p in pairs], [p[1] for p in pairs]
        with TritonScorer(f"127.0.0.1:{server.http}") as client:
            served = client.score_batch(refs, dists)
    finally:
        server.stop()
    np.testing.assert_allclose(served, _runtime(adapted_bundle, "underwater", refs, dists),
                               atol=tolerance("served_score").atol, rtol=0)


def test_adapted_domain_ensemble_head_scores_its_graph_stats(adapted_bundle, tmp_path):
    """The head model served by Triton, on the stats of the graph model the repository holds
    (run on ONNX Runtime: this server has no onnxruntime backend)."""
    import onnxruntime as ort

    repo = triton_from_bundle(adapted_bundle, tmp_path / "repo",
                              TritonConfig(domain="underwater", threads=1))
    pairs = _pairs()[:2]
    refs, dists = [p[0] for p in pairs], [p[1] for p in pairs]
    graph = ort.InferenceSession(str(repo / GRAPH_MODEL / "1" / "model.onnx"),
                                 providers=["CPUExecutionProvider"])
    served = _served_head(repo, tmp_path, graph.run(list(OUTPUT_NAMES), feed(refs, dists)))
    np.testing.assert_allclose(served, _runtime(adapted_bundle, "underwater", refs, dists),
                               atol=tolerance("served_score").atol, rtol=0)
