"""The HTTP server: scores, every bad request's JSON error, OpenAPI, metrics, backpressure,
timeouts, readiness, and a real uvicorn process on loopback with a graceful shutdown."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

from cdiqa.errors import BackendUnavailable, ConfigError
from cdiqa.runtime import Scorer, SessionOptions
from cdiqa.runtime.server import ServeConfig, create_app
from cdiqa.runtime.server_openapi import ERROR_CODES
from cdiqa.tolerances import tolerance

pytest.importorskip("starlette", reason="the server needs cdiqa[serve]")
httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")
from starlette.testclient import TestClient  # noqa: E402

ATOL = tolerance("served_score").atol


def png(a: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def noisy_pair(h: int = 64, w: int = 80, seed: int = 0, noise: float = 12.0):
    rng = np.random.default_rng(seed)
    ref = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    dist = np.clip(ref + rng.normal(0, noise, ref.shape), 0, 255).astype(np.uint8)
    return ref, dist


def files(ref: np.ndarray, dist: np.ndarray) -> dict:
    return {"ref": ("ref.png", png(ref), "image/png"), "dist": ("dist.png", png(dist), "image/png")}


@pytest.fixture(scope="module")
def scorer(tiny_bundle):
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        yield s


@contextmanager
def running(app):
    """A TestClient with the app's lifespan running and the model warm."""
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        yield client


def spec_statuses(client, path: str, method: str = "post") -> set[int]:
    return {int(s) for s in client.get("/openapi.json").json()["paths"][path][method]["responses"]}


def test_score_and_batch_match_the_runtime(scorer):
    ref, dist = noisy_pair()
    ref2, dist2 = noisy_pair(96, 64, seed=1, noise=30)
    with running(create_app(scorer)) as client:
        r = client.post("/v1/score", files=files(ref, dist), headers={"X-Request-Id": "abc-1"})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == r.headers["x-request-id"] == "abc-1"
        assert r.json()["domain"] == "natural"
        assert abs(r.json()["score"] - scorer.score(ref, dist)) <= ATOL

        batch = [("ref", ("a.png", png(ref))), ("dist", ("b.png", png(dist))),
                 ("ref", ("c.png", png(ref2))), ("dist", ("d.png", png(dist2))),
                 ("ref", ("e.png", png(ref))), ("dist", ("f.png", png(ref)))]
        r = client.post("/v1/score/batch", files=batch, params={"domain": "medical"})
        assert r.status_code == 200, r.text
        expected = scorer.with_domain("medical").score_batch([ref, ref2, ref], [dist, dist2, ref])
        np.testing.assert_allclose(r.json()["scores"], expected, atol=ATOL, rtol=0)
        assert r.json()["scores"][2] == 1.0 and r.json()["domain"] == "medical"
        assert len(r.json()["id"]) == 32  # generated when the client sends none

        r = client.post("/v1/score", files=files(ref, dist), data={"domain": "medical"})
        assert abs(r.json()["score"] - expected[0]) <= ATOL


def test_every_bad_request_gets_a_clear_json_4xx_and_the_server_keeps_serving(scorer):
    ref, dist = noisy_pair()
    good = files(ref, dist)
    expected = scorer.score(ref, dist)
    truncated = png(ref)[:300]
    big = np.random.default_rng(3).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    flat = np.zeros((1000, 1100, 3), np.uint8)  # 1.1 MP but a tiny PNG
    over = np.linspace(0, 2, 64 * 80, dtype=np.float32).reshape(64, 80)  # decodes, unscoreable
    config = ServeConfig(max_body=400_000, max_pixels=1_000_000, max_pairs=3)
    M = "multipart/form-data; boundary=xyz"
    cases = [  # (what, request kwargs, path, status, code, field, message)
        ("malformed bytes", {"files": {**good, "ref": ("ref.png", b"not a png")}}, "/v1/score",
         400, "invalid_image", "ref", r"Image for field 'ref': got 9 bytes of no known image "
                                      r"format, expected a PNG, JPEG or TIFF file"),
        ("truncated png", {"files": {**good, "dist": ("dist.png", truncated)}}, "/v1/score",
         400, "invalid_image", "dist", r"Image for field 'dist': got bytes that do not decode"),
        ("gif", {"files": {**good, "ref": ("r.gif", png(ref, "GIF"))}}, "/v1/score", 400,
         "invalid_image", "ref", r"Image format for field 'ref': got GIF, expected a PNG"),
        ("float tiff out of [0, 1]", {"files": {**good, "ref": ("r.tif", png(over, "TIFF"))}},
         "/v1/score", 422, "unprocessable_image", "ref", r"Range for image 'ref': got \[0, 2\]"),
        ("mismatched sizes", {"files": {**good, "dist": ("d.png", png(dist[:, :70]))}},
         "/v1/score", 422, "size_mismatch", "dist",
         r"Size for image 'dist': got 70x64, expected 80x64 like 'ref'"),
        ("too small", {"files": files(ref[:32, :32], dist[:32, :32])}, "/v1/score", 422,
         "image_too_small", "ref", r"Size for image 'ref': got 32x32, expected at least 64x64"),
        ("oversized body", {"files": files(big, big)}, "/v1/score", 413, "payload_too_large",
         None, r"Body size for request 'body': got \d+ bytes, expected at most 400000 bytes"),
        ("too many pixels", {"files": files(flat, flat)}, "/v1/score", 413, "image_too_large",
         "ref", r"Image size for field 'ref': got 1100x1000, expected at most 1000000 pixels"),
        ("json body", {"json": {"ref": "a.png", "dist": "b.png"}}, "/v1/score", 415,
         "unsupported_media_type", "content-type",
         r"Content type for request 'body': got 'application/json', expected "
         r"multipart/form-data"),
        ("no content type", {"content": b"x"}, "/v1/score", 415, "unsupported_media_type",
         "content-type", r"got 'none', expected multipart/form-data"),
        ("broken multipart", {"content": b"garbage", "headers": {"content-type": "multipart/form-"
                                                                            "data"}},
         "/v1/score", 400, "invalid_body", None, r"Multipart body for request 'body': got "),
        ("missing dist", {"files": {"ref": good["ref"]}}, "/v1/score", 400, "missing_field",
         "dist", r"Field for form 'dist': got nothing, expected an image file"),
        ("empty form", {"content": b"--xyz--\r\n", "headers": {"content-type": M}}, "/v1/score",
         400, "missing_field", "ref", r"Field for form 'ref': got nothing"),
        ("text, not a file", {"files": {"dist": good["dist"]}, "data": {"ref": "ref.png"}},
         "/v1/score", 400, "invalid_field", "ref", r"Field for form 'ref': got a text value, "
                                                   r"expected a file part"),
        ("two refs", {"files": [("ref", good["ref"]), ("ref", good["ref"]),
                                ("dist", good["dist"])]}, "/v1/score", 400, "invalid_field",
         "ref", r"Field for form 'ref': got 2 files, expected one\. Use /v1/score/batch"),
        ("unknown field", {"files": {**good, "reference": good["ref"]}}, "/v1/score", 400,
         "unknown_field", "reference", r"Field for form 'reference': got an unknown field"),
        ("unknown domain", {"files": good, "params": {"domain": "medcal"}}, "/v1/score", 400,
         "unknown_domain", "domain", r"Domain for bundle .*got 'medcal', expected one of "
                                     r"\['medical', 'natural'\].*'medical'"),
        ("two domains", {"files": good, "params": {"domain": "natural"},
                         "data": {"domain": "medical"}}, "/v1/score", 400, "invalid_field",
         "domain", r"Domain for request 'domain': got 'natural' \(query\) and 'medical' \(form\)"),
        ("batch counts differ", {"files": [("ref", good["ref"]), ("ref", good["ref"]),
                                           ("dist", good["dist"])]}, "/v1/score/batch", 400,
         "count_mismatch", "dist", r"Count for form 'dist': got 1, expected 2 like 'ref'"),
        ("batch too many", {"files": [(n, good[n]) for _ in range(4) for n in ("ref", "dist")]},
         "/v1/score/batch", 400, "too_many_pairs", "ref",
         r"Pairs for form 'ref': got 4, expected at most 3"),
        ("batch bad pair", {"files": [("ref", good["ref"]), ("dist", good["dist"]),
                                      ("ref", good["ref"]), ("dist", ("x.png", b"\x89PNG"))]},
         "/v1/score/batch", 400, "invalid_image", "dist[1]", r"Image for field 'dist\[1\]'"),
        ("batch size mismatch", {"files": [("ref", good["ref"]), ("dist", good["dist"]),
                                           ("ref", good["ref"]),
                                           ("dist", ("x.png", png(dist[:, :70])))]},
         "/v1/score/batch", 422, "size_mismatch", "dist[1]", r"Size for image 'dist'"),
    ]
    with running(create_app(scorer, config)) as client:
        for what, kwargs, path, status, code, field, message in cases:
            r = client.post(path, **kwargs)
            assert r.status_code == status, (what, r.text)
            error = r.json()["error"]
            assert error["code"] == code, what
            assert error.get("field") == field, what
            assert re.search(message, error["message"]), (what, error["message"])
            assert code in ERROR_CODES[status], what
            assert status in spec_statuses(client, path), what
            ok = client.post("/v1/score", files=good)
            assert ok.status_code == 200, (what, ok.text)
            assert abs(ok.json()["score"] - expected) <= ATOL
        for method, path, status, code in (("GET", "/v1/score", 405, "method_not_allowed"),
                                           ("GET", "/v2/score", 404, "not_found")):
            r = client.request(method, path)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        metrics = client.get("/metrics").text
    for code in {c[4] for c in cases}:
        n = sum(1 for c in cases if c[4] == code)
        assert f'cdiqa_errors_total{{kind="{code}"}} {float(n)}' in metrics, code
    assert f'cdiqa_http_requests_total{{endpoint="score",status="200"}} {float(len(cases))}' in metrics


def test_openapi_describes_exactly_the_app_routes(scorer):
    app = create_app(scorer)
    with running(app) as client:
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = {(r.path, m.lower()) for r in app.routes for m in r.methods if m != "HEAD"}
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert routes == described
    for path in ("/v1/score", "/v1/score/batch"):
        op = spec["paths"][path]["post"]
        assert {int(s) for s in op["responses"]} == {200, 400, 413, 415, 422, 500, 503, 504}
        assert op["parameters"][0]["schema"]["enum"] == ["medical", "natural"]
        form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"] == ["ref", "dist"]
        assert "Retry-After" in op["responses"]["503"]["headers"]
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert set(codes["enum"]) == {c for cs in ERROR_CODES.values() for c in cs}
    assert set(spec["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


def _busy(service, size: int = 2048):
    """Occupy the stream's worker with one large pair (a second or more of real inference)."""
    z = np.zeros((size, size, 3), np.float32)
    return service.submit("natural", z, z)


def test_full_queue_answers_503_with_retry_after(scorer):
    app = create_app(scorer, ServeConfig(max_batch=1, max_wait=0, max_queue=1, retry_after=2))
    ref, dist = noisy_pair()
    with running(app) as client:
        service = app.state.service
        first = _busy(service)
        deadline = time.monotonic() + 10
        while not first.running():  # the worker took it: the queue is empty again
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = _busy(service, 64)  # waits in the queue (max_queue=1)
        r = client.post("/v1/score", files=files(ref, dist))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "queue_full"
        assert re.search(r"Queue for server 'natural': got 1 pairs waiting, expected a free "
                         r"slot\. Retry after 2 s", r.json()["error"]["message"])
        first.result(60), second.result(60)
        assert client.post("/v1/score", files=files(ref, dist)).status_code == 200


def test_slow_answer_is_a_504_and_does_not_linger(scorer):
    app = create_app(scorer, ServeConfig(max_batch=1, max_wait=0, timeout=0.3))
    ref, dist = noisy_pair()
    with running(app) as client:
        busy = _busy(app.state.service)
        r = client.post("/v1/score", files=files(ref, dist))
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"
        assert "Duration for request 'score': got over 0.3 s" in r.json()["error"]["message"]
        busy.result(60)
        assert client.post("/v1/score", files=files(ref, dist)).status_code == 200
        metrics = client.get("/metrics").text
    assert "cdiqa_queue_depth 0.0" in metrics  # the timed-out pair was cancelled, not kept


def test_not_ready_until_loaded_and_warm(tiny_bundle):
    release = threading.Event()

    def load():  # a real load that waits for the test's signal
        release.wait(30)
        return Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1))

    ref, dist = noisy_pair()
    with TestClient(create_app(load), raise_server_exceptions=False) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["message"].startswith(
            "State for server 'model': got loading, expected loaded and warm")
        assert client.post("/v1/score", files=files(ref, dist)).json()["error"]["code"] == (
            "not_ready")
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        body = client.get("/readyz").json()
        assert body["status"] == "ready" and body["domains"] == ["medical", "natural"]
        assert client.post("/v1/score", files=files(ref, dist)).status_code == 200
        assert "cdiqa_ready 1.0" in client.get("/metrics").text


def test_a_broken_bundle_is_reported_by_readyz(tmp_path):
    app = create_app(tmp_path / "no-bundle")
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while app.state.service.failure is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.get("/readyz")
        assert r.status_code == 503
        assert re.search(r"got failed \(ManifestError: Manifest for bundle .*no-bundle'",
                         r.json()["error"]["message"])
        assert client.get("/healthz").status_code == 200


def test_options_and_missing_dependencies_are_reported(scorer, monkeypatch):
    with pytest.raises(ConfigError, match=r"Options for server 'serve': got \{'max_batch': 0\}"):
        create_app(scorer, ServeConfig(max_batch=0))
    assert ServeConfig().host == "127.0.0.1"
    import socket

    from cdiqa.runtime.server import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"Address for server '127\.0\.0\.1:{port}': got "
                                              r"Address already in use.*Pick another --port"):
            serve(scorer.manifest.root, ServeConfig(port=port, backend="onnxruntime",
                                                    threads=1))
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(BackendUnavailable, match=r"The HTTP server needs 'starlette'.*install "
                                                 r"'cdiqa\[serve\]'"):
        create_app(scorer)


def test_server_modules_import_without_starlette_or_torch():
    code = ("import sys\n"
            "for m in ('starlette', 'uvicorn', 'prometheus_client', 'torch', 'tritonclient'):\n"
            "    sys.modules[m] = None\n"
            "import cdiqa.runtime.server, cdiqa.runtime.server_openapi\n"
            "import cdiqa.runtime.server_metrics, cdiqa.runtime.triton_client\n"
            "import cdiqa.runtime.server_triton_head, cdiqa.runtime.server_triton_scorer\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr


# ---- a real uvicorn process on 127.0.0.1 ----


@pytest.mark.slow
def test_uvicorn_process_batches_answers_errors_and_drains_on_sigterm(tiny_bundle, scorer):
    cmd = [sys.executable, "-m", "cdiqa.cli", "serve", str(tiny_bundle), "--port", "0",
           "--backend", "onnxruntime", "--threads", "1", "--max-batch", "8",
           "--max-wait-ms", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"cdiqa serving on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            ref, dist = noisy_pair()
            bad = client.post("/v1/score", files={**files(ref, dist), "dist": ("d", b"xx")})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "dist"

            pairs = [noisy_pair(seed=i, noise=5 + 5 * i) for i in range(6)]

            def post(i):  # each client its own connection, as separate callers would
                with httpx.Client(base_url=url, timeout=30) as c:
                    return c.post("/v1/score", files=files(*pairs[i]),
                                  headers={"X-Request-Id": f"req-{i}"})

            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(post, range(6)))
            for i, r in enumerate(answers):
                assert r.status_code == 200 and r.json()["id"] == f"req-{i}"
                assert abs(r.json()["score"] - scorer.score(*pairs[i])) <= ATOL
            metrics = client.get("/metrics").text
            mean = (float(re.search(r"cdiqa_batch_size_sum (\S+)", metrics).group(1))
                    / float(re.search(r"cdiqa_batch_size_count (\S+)", metrics).group(1)))
            assert mean > 1.5, metrics  # six concurrent pairs met in micro-batches

            # Graceful shutdown: accepted requests (held up to 1 s by the batcher) are answered.
            with ThreadPoolExecutor(4) as pool:
                pending = [pool.submit(post, i) for i in range(4)]
                deadline = time.monotonic() + 10
                while "cdiqa_queue_depth 4.0" not in client.get("/metrics").text:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
                finished = [f.result(30) for f in pending]
        assert [r.status_code for r in finished] == [200] * 4
        assert proc.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
