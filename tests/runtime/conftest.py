"""The two ways the server tests (test_server.py, test_server_hostile.py) run the server: the
app in starlette's TestClient, and a real ``iqa-export serve`` process on loopback.

Both come as fixtures that return a context manager, so a test opens as many servers as it
needs. starlette and httpx are imported only when used: the other runtime tests run without
them, and all of tests/runtime runs where torch is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

#: how long a server may take to report ready (the model's warm-up run) before a test fails
READY_S = 60


@pytest.fixture(scope="session")
def running():
    """``running(app)``: a TestClient with the app's lifespan running and the model warm."""
    return _running


@pytest.fixture(scope="session")
def serve_process():
    """``serve_process(bundle, *options, threads=1)``: an ``iqa-export serve`` process on
    127.0.0.1 (ONNX Runtime, a free port), ready; yields ``(process, url)`` and kills the
    process on the way out if the test has not stopped it."""
    return _serve_process


@contextmanager
def _running(app):
    from starlette.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + READY_S
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.02)
        yield client


@contextmanager
def _serve_process(bundle: str | Path, *options: str, threads: int = 1):
    cmd = [sys.executable, "-m", "cdiqa.cli", "serve", str(bundle), "--port", "0",
           "--backend", "onnxruntime", "--threads", str(threads), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"cdiqa serving on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        _wait_ready(match.group(1), proc)
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + READY_S
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            try:  # the socket listens before uvicorn's loop serves it
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
