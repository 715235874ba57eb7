"""TritonScorer without a server: options, preprocessing and connection errors.

Scoring against a real tritonserver is in tests/export/test_triton_e2e.py.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from cdiqa.errors import BackendUnavailable, ConfigError, ImageError, ShapeError
from cdiqa.runtime.triton_client import TritonScorer

pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (cdiqa[triton])")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_protocol_names_the_choices():
    with pytest.raises(ConfigError, match=r"Protocol for Triton client 'protocol': got 'rest', "
                                          r"expected one of \('http', 'grpc'\)"):
        TritonScorer("127.0.0.1", protocol="rest")


def test_default_ports_follow_the_protocol():
    assert TritonScorer("127.0.0.1").url == "127.0.0.1:8000"
    assert TritonScorer("127.0.0.1", protocol="grpc").url == "127.0.0.1:8001"
    assert TritonScorer("127.0.0.1:9100").url == "127.0.0.1:9100"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_server_is_not_ready_and_scoring_says_where(protocol):
    port = _closed_port()
    client = TritonScorer(f"127.0.0.1:{port}", protocol, timeout=5)
    assert client.is_ready() is False
    r = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(BackendUnavailable, match=rf"Connection for Triton server "
                                                 rf"'127\.0\.0\.1:{port}': got .*Connection "
                                                 r"refused.*Start tritonserver or fix the url"):
        client.score(r, r)
    client.close()


def test_images_are_checked_before_any_request():
    client = TritonScorer(f"127.0.0.1:{_closed_port()}")
    r = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(ImageError, match=r"Size for image 'dist\[0\]': got 70x64, expected "
                                         r"64x64 like 'ref\[0\]'"):
        client.score(r, np.zeros((64, 70, 3), np.float32))
    with pytest.raises(ShapeError, match=r"Count for images 'dists': got 2, expected 1 like refs"):
        client.score_batch([r], [r, r])
    with pytest.raises(ShapeError, match=r"Dtype for tensor 'roi': got float64"):
        client.infer({"roi": np.zeros((1, 4))})
