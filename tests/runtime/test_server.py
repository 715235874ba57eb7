"""The HTTP server: scores, every bad request's JSON error, OpenAPI, metrics, backpressure,
timeouts, readiness, and a real uvicorn process on loopback with a graceful shutdown."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cdiqa.errors import BackendUnavailable, ConfigError, ShapeError
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


def spec_statuses(client, path: str, method: str = "post") -> set[int]:
    return {int(s) for s in client.get("/openapi.json").json()["paths"][path][method]["responses"]}


def test_score_and_batch_match_the_runtime(scorer, running):
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


def test_every_bad_request_gets_a_clear_json_4xx_and_the_server_keeps_serving(scorer, running):
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
         "ref", r"Size for image 'ref': got 1100x1000 \(1100000 pixels\), expected at most "
         r"1000000 pixels"),
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
         "unknown_domain", "domain", r"^Domain for request 'domain': got 'medcal', expected "
                                     r"one of \['medical', 'natural'\]\. Did you mean "
                                     r"'medical'\?$"),
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
            assert str(scorer.manifest.root) not in r.text, what  # no server paths
            assert code in ERROR_CODES[status], what
            assert status in spec_statuses(client, path), what
            ok = client.post("/v1/score", files=good)
            assert ok.status_code == 200, (what, ok.text)
            assert abs(ok.json()["score"] - expected) <= ATOL
        for method, path, status, code in (("GET", "/v1/score", 405, "method_not_allowed"),
                                           ("GET", "/v2/score", 404, "not_found")):
            r = client.request(method, path)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        r = client.get("/v1/score/batch")
        assert r.headers["allow"] == "POST"
        assert r.json()["error"]["message"] == ("Method for path '/v1/score/batch': got GET, "
                                                "expected POST. Use POST.")
        r = client.post("/healthz")
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
        metrics = client.get("/metrics").text
    for code in {c[4] for c in cases}:
        n = sum(1 for c in cases if c[4] == code)
        assert f'cdiqa_errors_total{{kind="{code}"}} {float(n)}' in metrics, code
    assert f'cdiqa_http_requests_total{{endpoint="score",status="200"}} {float(len(cases))}' in metrics


def test_openapi_describes_exactly_the_app_routes(scorer, running):
    app = create_app(scorer)
    with running(app) as client:
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = {(r.path, m.lower()) for r in app.routes for m in r.methods if m != "HEAD"}
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert routes == described
    for path in ("/v1/score", "/v1/score/batch"):
        op = spec["paths"][path]["post"]
        assert {int(s) for s in op["responses"]} == {200, 400, 408, 413, 415, 422, 500, 503,
                                                     504}
        assert op["parameters"][0]["schema"]["enum"] == ["medical", "natural"]
        form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"] == ["ref", "dist"]
        assert "Retry-After" in op["responses"]["503"]["headers"]
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert set(codes["enum"]) == {c for cs in ERROR_CODES.values() for c in cs}
    assert set(spec["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


class GatedScorer:
    """The real scorer, whose micro-batches wait while ``gate`` is closed: a model exactly as
    slow as a test needs, with no guess at how long an inference takes on this machine."""

    def __init__(self, scorer, gate: threading.Event | None = None) -> None:
        self._scorer = scorer
        self.gate = gate or threading.Event()
        if gate is None:
            self.gate.set()  # open for the warm-up run

    def score_pairs(self, pairs, **kw):
        assert self.gate.wait(60), "the test never opened the gate"
        return self._scorer.score_pairs(pairs, **kw)

    def with_domain(self, domain: str) -> GatedScorer:
        return GatedScorer(self._scorer.with_domain(domain), self.gate)

    def __getattr__(self, name: str):
        return getattr(self._scorer, name)


def _busy(app, size: int = 64):
    """Close the gate and give the stream's worker one pair: it holds the worker until the
    test opens the gate."""
    app.state.service.scorer.gate.clear()
    return app.state.service.submit("natural", *noisy_pair(size, size))


def test_full_queue_answers_503_with_retry_after(scorer, running):
    app = create_app(GatedScorer(scorer), ServeConfig(max_batch=1, max_wait=0, max_queue=1,
                                                      retry_after=2))
    ref, dist = noisy_pair()
    with running(app) as client:
        first = _busy(app)
        deadline = time.monotonic() + 10
        while not first.running():  # the worker took it: the queue is empty again
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = app.state.service.submit("natural", ref, dist)  # waits (max_queue=1)
        r = client.post("/v1/score", files=files(ref, dist))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "queue_full"
        assert re.search(r"Queue for server 'natural': got 1 pairs waiting, expected a free "
                         r"slot\. Retry after 2 s", r.json()["error"]["message"])
        app.state.service.scorer.gate.set()
        first.result(60), second.result(60)
        assert client.post("/v1/score", files=files(ref, dist)).status_code == 200


def test_slow_answer_is_a_504_and_does_not_linger(scorer, running):
    app = create_app(GatedScorer(scorer), ServeConfig(max_batch=1, max_wait=0, timeout=0.3))
    ref, dist = noisy_pair()
    with running(app) as client:
        busy = _busy(app)
        r = client.post("/v1/score", files=files(ref, dist))
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"
        assert "Duration for request 'score': got over 0.3 s" in r.json()["error"]["message"]
        app.state.service.scorer.gate.set()
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


_NUMBER = "a finite number in (0, 9223372036]"


@pytest.mark.parametrize("options, message", [
    ({"max_wait": float("inf")}, "Option for server 'max_wait': got inf, expected a finite "
                                 "number in [0, 9223372036]. Fix ServeConfig.max_wait "
                                 "(iqa-export serve --max-wait-ms)."),
    ({"max_wait": -0.001}, "Option for server 'max_wait': got -0.001, expected a finite "
                           "number in [0, 9223372036]. Fix ServeConfig.max_wait (iqa-export "
                           "serve --max-wait-ms)."),
    ({"timeout": float("nan")}, f"Option for server 'timeout': got nan, expected {_NUMBER}. "
                                "Fix ServeConfig.timeout (iqa-export serve --timeout)."),
    ({"timeout": 0}, f"Option for server 'timeout': got 0, expected {_NUMBER}. Fix "
                     "ServeConfig.timeout (iqa-export serve --timeout)."),
    ({"keep_alive": float("inf")}, f"Option for server 'keep_alive': got inf, expected "
                                   f"{_NUMBER}. Fix ServeConfig.keep_alive."),
    ({"max_batch": 0}, "Option for server 'max_batch': got 0, expected an integer >= 1. Fix "
                       "ServeConfig.max_batch (iqa-export serve --max-batch)."),
    ({"max_body": float("inf")}, "Option for server 'max_body': got inf, expected an integer "
                                 ">= 1. Fix ServeConfig.max_body (iqa-export serve "
                                 "--max-body-mb)."),
    ({"port": 70000}, "Option for server 'port': got 70000, expected an integer in [0, "
                      "65535]. Fix ServeConfig.port (iqa-export serve --port)."),
    ({"max_concurrency": 0}, "Option for server 'max_concurrency': got 0, expected an integer "
                             ">= 1. Fix ServeConfig.max_concurrency."),
    ({"max_header": 0}, "Option for server 'max_header': got 0, expected an integer >= 1. "
                        "Fix ServeConfig.max_header."),
    ({"decode_threads": 0}, "Option for server 'decode_threads': got 0, expected an integer "
                            ">= 1. Fix ServeConfig.decode_threads."),
    ({"retry_after": -1}, "Option for server 'retry_after': got -1, expected an integer >= 0. "
                          "Fix ServeConfig.retry_after."),
    ({"max_wait": 2.0, "timeout": 1.0}, "Option for server 'max_wait': got 2.0 s, expected "
                                        "less than timeout (1.0 s). A lone request would wait "
                                        "out its timeout in the batcher: lower --max-wait-ms "
                                        "or raise --timeout."),
])
def test_numeric_options_are_refused_naming_the_option(scorer, options, message):
    with pytest.raises(ConfigError) as info:
        create_app(scorer, ServeConfig(**options))
    assert str(info.value) == message


def test_options_and_missing_dependencies_are_reported(scorer, monkeypatch):
    from cdiqa.runtime.server import serve

    # `serve --max-wait-ms inf` stayed "loading" forever (the batcher's thread had died)
    with pytest.raises(ConfigError, match=r"^Option for server 'max_wait': got inf"):
        serve(scorer.manifest.root, ServeConfig(max_wait=float("inf")))
    ServeConfig(max_batch=1, max_wait=60.0).check()  # batches of 1 never wait: allowed
    assert ServeConfig().host == "127.0.0.1"
    import socket

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


def test_uvicorn_config_carries_the_connection_limits(scorer):
    from cdiqa.runtime.server import uvicorn_config

    app = create_app(scorer)

    def limits(config):
        c = uvicorn_config(app, config)
        return (c.http, c.timeout_keep_alive, c.limit_concurrency,
                c.h11_max_incomplete_event_size, c.timeout_graceful_shutdown, c.lifespan)

    assert limits(ServeConfig()) == ("h11", 5.0, 128, 16384, 35, "on")
    assert limits(ServeConfig(keep_alive=2.5, max_concurrency=None, max_header=8192,
                              timeout=0.5, max_wait=0.001)) == ("h11", 2.5, None, 8192, 6, "on")


def test_request_ids_are_echoed_only_when_safe(scorer, running):
    import h11

    reported = "a" * 127 + " b"  # 129 characters, a space at position 128: cut at 128, it
    assert len(reported) == 129 and reported[127] == " "  # ended in a space h11 refused
    cases = {reported: None, " ok-1 ": "ok-1", "x" * 128: "x" * 128, "x" * 129: None,
             "trace:2.a_b-C": "trace:2.a_b-C", "id/1": None, "a\tb": None, "": None}
    ref, dist = noisy_pair()
    with running(create_app(scorer)) as client:
        r = client.post("/v1/score", files=files(ref, dist), headers={"X-Request-Id": reported})
        assert r.status_code == 200, r.text
        assert re.fullmatch(r"[0-9a-f]{32}", r.json()["id"]) and r.json()["id"] == (
            r.headers["x-request-id"])
        for sent, expected in cases.items():
            got = client.get("/healthz", headers={"X-Request-Id": sent}).headers["x-request-id"]
            if expected is None:
                assert re.fullmatch(r"[0-9a-f]{32}", got), (sent, got)
            else:
                assert got == expected, sent
            h11.Response(status_code=200, headers=[("X-Request-Id", got)])  # sendable


class ProfileSession:
    """A real session that refuses images taller than ``max_height``, as a TensorRT engine
    refuses shapes beyond its optimisation profile, and that can hold its next call."""

    def __init__(self, session, max_height: int) -> None:
        self.session, self.max_height, self.device = session, max_height, session.device
        self.hold, self.release = threading.Event(), threading.Event()

    def infer(self, feed):
        if self.hold.is_set():
            self.hold.clear()
            self.release.wait(30)
        height = feed["ref"].shape[2]
        if height > self.max_height:
            raise ShapeError(f"Height for tensor 'ref': got {height}, expected at most "
                             f"{self.max_height}. Build the engine with a larger profile.")
        return self.session.infer(feed)

    def close(self) -> None:
        pass


def test_a_failing_pair_fails_only_its_own_request(scorer, running):
    session = ProfileSession(scorer.session, max_height=80)
    app = create_app(Scorer(scorer.manifest, session), ServeConfig(max_batch=8, max_wait=0))
    good = [noisy_pair(seed=i, noise=5 + 10 * i) for i in range(3)]
    bad = noisy_pair(96, 64, seed=9)
    with running(app) as client:
        session.hold.set()
        z = np.zeros((64, 64, 3), np.float32)
        blocker = app.state.service.submit("natural", z, z)  # held in the worker
        with ThreadPoolExecutor(4) as pool:
            posts = [pool.submit(client.post, "/v1/score", files=files(*p))
                     for p in (good[0], good[1], bad, good[2])]
            deadline = time.monotonic() + 30
            while "cdiqa_queue_depth 5.0" not in client.get("/metrics").text:
                assert time.monotonic() < deadline  # all four wait: they leave as one batch
                time.sleep(0.01)
            session.release.set()
            answers = [f.result(60) for f in posts]
        blocker.result(30)
        metrics = client.get("/metrics").text
    for r, pair in zip(answers[:2] + answers[3:], good):
        assert r.status_code == 200, r.text
        assert abs(r.json()["score"] - scorer.score(*pair)) <= ATOL
    assert answers[2].status_code == 422
    assert answers[2].json()["error"] == {
        "code": "unprocessable_image", "message": "Height for tensor 'ref': got 96, expected "
        "at most 80. Build the engine with a larger profile."}
    # batches: warm-up 1, blocker 1, the four together (failed), then each of them alone
    assert "cdiqa_batch_size_count 7.0" in metrics and "cdiqa_batch_size_sum 10.0" in metrics


def test_shutdown_waits_for_a_hung_stream_at_most_the_timeout(scorer):
    from cdiqa.runtime.server import Service

    session = ProfileSession(scorer.session, max_height=80)
    service = Service(Scorer(scorer.manifest, session), ServeConfig(timeout=0.2))
    service.start()
    session.hold.set()
    z = np.zeros((64, 64, 3), np.float32)
    hung = service.submit("natural", z, z)
    queued = service.submit("natural", z, z)
    closer = threading.Thread(target=service.close, daemon=True)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and service.drained is False  # returned; left it running
    session.release.set()
    assert (hung.result(30), queued.result(30)) == (1.0, 1.0)  # still scored


def test_a_body_still_arriving_at_the_deadline_gets_408(scorer):
    import asyncio

    app = create_app(scorer, ServeConfig(timeout=0.3))
    service = app.state.service
    service.start()  # no lifespan under ASGITransport: warm up here

    async def post():
        stalled = asyncio.Event()

        async def body():  # the start of a multipart body, then nothing more
            yield b"--xyz\r\nContent-Disposition: form-data; name=\"ref\"; filename=\"r\"\r\n"
            await stalled.wait()

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cdiqa") as c:
            return await c.post("/v1/score", content=body(),
                                headers={"content-type": "multipart/form-data; boundary=xyz"})

    try:
        r = asyncio.run(post())
    finally:
        service.close()
    assert r.status_code == 408, r.text
    assert r.json()["error"] == {"code": "body_timeout", "message": (
        "Duration for request 'body': got over 0.3 s to arrive, expected the whole body within "
        "0.3 s. Send the body at once, send smaller images, or raise the server's --timeout.")}


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
def test_uvicorn_process_batches_answers_errors_and_drains_on_sigterm(tiny_bundle, scorer,
                                                                      serve_process):
    with serve_process(tiny_bundle, "--max-batch", "8", "--max-wait-ms", "1000") as (proc, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            ref, dist = noisy_pair()
            bad = client.post("/v1/score", files={**files(ref, dist), "dist": ("d", b"xx")})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "dist"
            r = client.post("/v1/score", files=files(ref, dist),  # was an empty reply
                            headers={"X-Request-Id": "a" * 127 + " b"})
            assert r.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", r.json()["id"])

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
