"""The server against hostile input: header bombs (413 whatever the size), admission by
decoded pixels (503 busy, 413 for a request that could never fit), a timed-out request's
tiled work abandoned, a fuzz of mutated uploads (only 4xx), MPO and 16-bit PNG uploads, and a
real server process whose peak memory stays bounded under a burst of 38 KB bombs."""

from __future__ import annotations

import io
import signal
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cdiqa.runtime import Scorer, SessionOptions
from cdiqa.runtime.server import ServeConfig, create_app
from cdiqa.tolerances import tolerance

pytest.importorskip("starlette", reason="the server needs cdiqa[serve]")
httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")

ATOL = tolerance("served_score").atol


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def upload(ref: bytes, dist: bytes) -> dict:
    return {"ref": ("ref", ref, "application/octet-stream"),
            "dist": ("dist", dist, "application/octet-stream")}


def zero_png(width: int, height: int) -> bytes:
    """An all-zero 8-bit grey PNG, written row by row (never the whole image in memory):
    6000 x 6600 is ~38 KB on disk and 40 MP decoded."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def noisy(h: int = 64, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    dist = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    return ref, dist


@pytest.fixture(scope="module")
def scorer(tiny_bundle):
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        yield s


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixel (as in test_budget)."""
    z = zero_png(1, 1)
    ihdr = z[8:33]
    import struct

    body = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    ihdr = ihdr[:8] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return z[:8] + ihdr + z[-12:]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_bombs_get_413_whatever_their_size(scorer, running):
    ok = encode(noisy()[0])
    with running(create_app(scorer)) as client:
        for size in ((8001, 8000), (10_000, 10_000), (20_000, 20_000), (2**31 - 1, 2**31 - 1)):
            r = client.post("/v1/score", files=upload(header_only_png(*size), ok))
            assert r.status_code == 413, (size, r.text)
            assert r.json()["error"]["code"] == "image_too_large"
            assert r.json()["error"]["field"] == "ref"
        assert client.post("/v1/score", files=upload(ok, ok)).status_code == 200


def test_admission_counts_decoded_pixels(scorer, running):
    ref, dist = noisy()  # 64 x 80: 10240 pixels a pair
    config = ServeConfig(max_inflight_pixels=15_000, retry_after=2)
    with running(create_app(scorer, config)) as client:
        budget = client.app.state.service.pixels
        pair = upload(encode(ref), encode(dist))
        assert client.post("/v1/score", files=pair).status_code == 200
        assert budget.in_use == 0  # released once scored
        r = client.post("/v1/score/batch", files=[("ref", ("a", encode(ref))),
                                                  ("dist", ("b", encode(dist))),
                                                  ("ref", ("c", encode(ref))),
                                                  ("dist", ("d", encode(dist)))])
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
        assert "20480 decoded pixels, expected at most 15000" in r.json()["error"]["message"]
        assert budget.try_acquire(10_000)  # another request's pixels, in flight
        r = client.post("/v1/score", files=pair)
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json()["error"]["code"] == "busy"
        assert "10000 of 15000 decoded pixels taken" in r.json()["error"]["message"]
        budget.release(10_000)
        assert client.post("/v1/score", files=pair).status_code == 200


class CountingSession:
    """The real session, counting its inference calls (a spy: every call goes through)."""

    def __init__(self, session) -> None:
        self.session, self.calls = session, 0

    def infer(self, feed):
        self.calls += 1
        return self.session.infer(feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_a_timed_out_request_abandons_its_tiles(scorer, running):
    """2048 x 2048 in 32 px tiles is 4096 graph calls (about a minute here): the request
    times out after 1 s, and its pair stops at the next tile instead of running on."""
    spy = CountingSession(scorer.session)
    tiled = Scorer(scorer.manifest, spy, tile=32, max_batch=1)
    big = np.zeros((2048, 2048, 3), np.uint8)
    n_tiles = len(tiled._tiles(big.shape[:2]))
    with running(create_app(tiled, ServeConfig(timeout=1.0))) as client:
        budget = client.app.state.service.pixels
        r = client.post("/v1/score", files=upload(encode(big), encode(big)))
        assert r.status_code == 504, r.text
        at_timeout = spy.calls
        deadline = time.monotonic() + 120
        while budget.in_use:  # released when the abandoned pair's future is done
            assert time.monotonic() < deadline, f"still scoring: {spy.calls} calls"
            time.sleep(0.05)
        assert spy.calls - at_timeout <= 2  # the call running at the deadline, at most
        assert spy.calls < n_tiles
        ref, dist = noisy()
        assert client.post("/v1/score", files=upload(encode(ref), encode(dist))).status_code \
            == 200


def test_mpo_and_16_bit_uploads_are_scored_like_their_pixels(scorer, running):
    from PIL import Image

    ref, dist = noisy(seed=3)
    buf = io.BytesIO()
    Image.fromarray(ref).save(buf, format="MPO", save_all=True,
                              append_images=[Image.fromarray(dist)])
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        first = np.asarray(im.convert("RGB"))
    deep_ref = ref.astype(np.uint16) * 257 + 100
    deep_dist = dist.astype(np.uint16) * 257 + 7
    with running(create_app(scorer)) as client:
        r = client.post("/v1/score", files=upload(buf.getvalue(), encode(first)))
        assert r.status_code == 200, r.text
        assert r.json()["score"] == pytest.approx(scorer.score(first, first), abs=ATOL)
        pngs = [encode_png16(a) for a in (deep_ref, deep_dist)]
        r = client.post("/v1/score", files=upload(*pngs))
        assert r.status_code == 200, r.text
        assert r.json()["score"] == pytest.approx(scorer.score(deep_ref, deep_dist), abs=ATOL)


def encode_png16(a: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (unfiltered rows) of uint16 ``a`` (H, W, 3)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    h, w, _ = a.shape
    rows = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# ---- fuzzing the endpoint ----

#: small: a mutated header declaring a large image is refused (413), not allocated
FUZZ_PIXELS = 1_000_000


def _seeds() -> list[bytes]:
    from PIL import Image

    rgb = noisy(64, 72, seed=4)[0]
    out = [encode(rgb), encode(rgb, "JPEG", quality=90), encode(rgb, "TIFF"),
           encode(rgb, "TIFF", compression="tiff_lzw"),
           encode(rgb[..., 0], "TIFF", compression="packbits"),
           encode_png16(rgb.astype(np.uint16) * 257)]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="MPO", save_all=True,
                              append_images=[Image.fromarray(rgb[::-1].copy())])
    return out + [buf.getvalue()]


@pytest.fixture(scope="module")
def fuzz_client(scorer, running):
    with running(create_app(scorer, ServeConfig(max_pixels=FUZZ_PIXELS))) as client:
        yield client


def test_mutated_uploads_get_4xx_or_a_score(fuzz_client):
    """Derandomized hypothesis (the examples follow from this code, not the clock): 80
    mutated files as 'ref' beside a valid 'dist'; a few seconds."""
    hypothesis = pytest.importorskip("hypothesis", reason="the fuzz test needs hypothesis")
    from hypothesis import HealthCheck, given, settings, strategies as st
    from hypothesis.configuration import set_hypothesis_home_dir

    import tempfile

    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cdiqa-hypothesis")  # not the repo
    seeds, ok = _seeds(), _seeds()[0]

    @st.composite
    def mutated(draw) -> bytes:
        data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
        for _ in range(draw(st.integers(1, 6))):
            at = draw(st.integers(0, len(data) - 1))
            kind = draw(st.sampled_from(["set", "set", "set", "insert", "cut"]))
            if kind == "set":
                data[at] = draw(st.integers(0, 255))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            else:
                del data[max(at, 8):]
        return bytes(data)

    @settings(derandomize=True, deadline=None, database=None, max_examples=80,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated())
    def check(data):
        r = fuzz_client.post("/v1/score", files=upload(data, ok))
        assert r.status_code in (200, 400, 413, 422), r.text
        if r.status_code != 200:
            assert r.json()["error"]["field"] in ("ref", "dist", None), r.text

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on damaged TIFF tags and bombs
        check()


# ---- a real server process under a burst of bombs ----

#: Peak RSS bound of the bomb burst below. What the server may hold at once: Python,
#: onnxruntime and the default model (~0.3 GB); the one bomb pair the pixel budget admits
#: (2 x 40 MP as float32 RGB = 0.95 GB, plus ~0.6 GB while an image is converted); its
#: tiles' activations (at most max_batch 512 + 2 x 128 px crops, ~0.6 GB). That is ~2.5 GB
#: on any machine: it follows from the budget and the tile, not from the CPU or its speed.
#: Before the budget and tiling, one such pair took 6.1 GB and a burst of them more.
BOMB_BURST_RSS = 3.5e9


def _peak_rss(pid: int) -> float:
    """VmHWM (the kernel's high-water mark of resident memory) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_burst_of_bombs_keeps_memory_bounded_and_the_server_serving(serve_process):
    from cdiqa.manifest import DEFAULT_BUNDLE

    bomb = zero_png(6000, 6600)
    assert len(bomb) < 50_000  # 38 KB that decodes to 40 MP
    with serve_process(DEFAULT_BUNDLE, "--timeout", "3", threads=2) as (proc, url):
        with httpx.Client(base_url=url, timeout=60) as client:
            def post(_):
                with httpx.Client(base_url=url, timeout=60) as c:
                    return c.post("/v1/score", files=upload(bomb, bomb)).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(post, range(8)))
            # one pair admitted (times out: 504, its tiles abandoned), the rest refused busy
            assert set(statuses) <= {503, 504} and 504 in statuses, statuses
            ref, dist = noisy(96, 128, seed=5)
            deadline = time.monotonic() + 60
            while (r := client.post("/v1/score", files=upload(encode(ref), encode(dist)))
                   ).status_code == 503:  # busy until the abandoned pair lets go
                assert time.monotonic() < deadline, r.text
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            peak = _peak_rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert peak < BOMB_BURST_RSS, f"peak RSS {peak / 1e9:.2f} GB"
