"""The pixel budget and hostile or unusual image files: header bombs refused before decoding,
arrays by shape, every decoder exception a clean ImageDecodeError (and a fuzz test of
mutated files), 16-bit PNG kept at 16 bits, MPO read by its first frame, empty arrays and
closed scorers refused with clear messages. The HTTP side: test_server_hostile.py."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from cdiqa.errors import ConfigError, ImageDecodeError, ImageError, ImageTooLarge
from cdiqa.images import (MAX_PIXELS, as_image, check_pixels, image_header, load_image,
                          load_image_bytes, pixel_budget)
from cdiqa.runtime import Scorer, SessionOptions
from cdiqa.runtime.stream import StreamScorer
from cdiqa.tolerances import tolerance

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz test needs hypothesis (cdiqa[test])")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# hypothesis caches the source's constants under ./.hypothesis: not in the repository
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cdiqa-hypothesis")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds none of them."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 ``a`` (H, W, C), C = 1, 3 or 4; rows use the Sub filter, so
    decoding has to undo it with PNG's 6- or 8-byte pixel stride."""
    h, w, c = a.shape
    color = {1: 0, 3: 2, 4: 6}[c]
    rows = []
    for y in range(h):
        raw = np.frombuffer(a[y].astype(">u2").tobytes(), np.uint8).astype(np.int16)
        sub = raw.copy()
        sub[2 * c:] -= raw[:-2 * c]  # Sub: each byte minus the byte one pixel to the left
        rows.append(b"\x01" + (sub % 256).astype(np.uint8).tobytes())
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def scorer(tiny_bundle):
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        yield s


# ---- the budget ----


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(8001, 8000), (10_000, 10_000), (20_000, 20_000),
                                  (2**31 - 1, 2**31 - 1)])
def test_header_bombs_are_too_large_whatever_their_size(tmp_path, size):
    """Under Pillow's limit (~179 MP) our check refuses, above it Pillow's: the same class.
    The files hold no pixel, so a decode would fail: the size was checked first."""
    data = header_only_png(*size)
    with pytest.raises(ImageTooLarge, match=r"Size for image 'bomb.png': got .*expected at "
                                            r"most \d+ pixels\. Downscale or crop it"):
        load_image_bytes(data, "bomb.png")
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(ImageTooLarge):
        load_image(tmp_path / "bomb.png")


def test_the_budget_is_the_callers_or_the_documented_default():
    data = header_only_png(300, 200)
    with pytest.raises(ImageTooLarge, match=r"got 300x200 \(60000 pixels\), expected at most "
                                            r"59999 pixels"):
        load_image_bytes(data, "h.png", max_pixels=59_999)
    with pytest.raises(ImageDecodeError):  # within budget: decoded, and it has no pixels
        load_image_bytes(data, "h.png", max_pixels=60_000)
    assert pixel_budget(None) == MAX_PIXELS == 64_000_000
    assert image_header(data, "h.png") == ("PNG", 300, 200)
    for bad in (0, -1, 1.5, True, "64e6"):
        with pytest.raises(ConfigError, match="Option for pixel budget 'max_pixels'"):
            pixel_budget(bad)
    with pytest.raises(ConfigError, match=r"expected at most \d+ \(2 x PIL.Image.MAX_IMAGE_"):
        pixel_budget(2 * Image.MAX_IMAGE_PIXELS + 1)  # Pillow would decide, not the budget


def test_arrays_are_checked_by_shape_before_any_copy(scorer):
    # a broadcast view: 243 MP "of" uint8 that takes no memory; converting it would take 2.9 GB
    huge = np.broadcast_to(np.uint8(0), (9000, 9000, 3))
    with pytest.raises(ImageTooLarge, match=r"'ref\[0\]': got 9000x9000 \(81000000 pixels\)"):
        scorer.score(huge, huge)
    small = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ImageTooLarge, match="expected at most 4000 pixels"):
        Scorer(scorer.manifest, scorer.session, max_pixels=4000).score(small, small)
    with pytest.raises(ImageTooLarge):
        check_pixels(64, 64, "x", 4095)


def test_stream_scorer_holds_images_to_the_scorers_budget(scorer):
    small = np.zeros((64, 64, 3), np.uint8)
    limited = Scorer(scorer.manifest, scorer.session, max_pixels=4000)
    with StreamScorer(limited) as stream:
        with pytest.raises(ImageTooLarge):
            stream.submit(small, small)
    with pytest.raises(ImageTooLarge):
        StreamScorer(limited, reference=small)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_empty_arrays_are_refused_by_shape(dtype):
    with pytest.raises(ImageError, match=r"Shape for image 'ref': got \(0, 0, 3\), expected at "
                                         r"least one pixel"):
        as_image(np.zeros((0, 0, 3), dtype), "ref")
    with pytest.raises(ImageError, match=r"got \(5, 0\)"):
        as_image(np.zeros((5, 0), dtype), "ref")


def test_closed_scorers_say_so(tiny_bundle):
    s = Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1))
    a = np.zeros((64, 64, 3), np.uint8)
    s.close()
    with pytest.raises(ConfigError, match=r"State for scorer 'Scorer': got closed, expected an "
                                          r"open scorer"):
        s.score(a, a)
    stream = StreamScorer(s)
    with pytest.raises(ConfigError, match="got closed"):  # the stream's future carries it
        stream.submit(a, a).result(timeout=30)
    stream.close()


# ---- decoding ----


class _Crashing(ImageFile.ImageFile):
    """A format whose decoder raises TypeError, as Pillow's TIFF plugin did on a crafted
    950-byte file (issue 12): registered through Pillow's plugin interface, not a mock."""

    format = "CRASHTEST"

    def _open(self) -> None:
        self._mode, self._size = "RGB", (64, 64)

    def load(self):
        raise TypeError("'NoneType' object is not subscriptable")


@pytest.fixture
def crashing_format():
    Image.register_open(_Crashing.format, _Crashing, lambda head: head.startswith(b"CRASH"))
    try:
        yield b"CRASH" + bytes(64)
    finally:
        Image.OPEN.pop(_Crashing.format, None)
        Image.ID.remove(_Crashing.format)


def test_any_decoder_exception_is_an_image_decode_error(crashing_format):
    with pytest.raises(ImageDecodeError, match=r"Image file 'x.crash' cannot be read: 'NoneType' "
                                               r"object is not subscriptable\. Check") as info:
        load_image_bytes(crashing_format, "x.crash")
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_rgb_png_keeps_16_bits(scorer, channels):
    rng = np.random.default_rng(channels)
    a = rng.integers(0, 65536, (70, 66, channels), dtype=np.uint16)
    a[..., :3] = (a[..., :3] // 257) * 257 + rng.integers(1, 200, (70, 66, 3))  # low bytes matter
    loaded = load_image_bytes(png16(a), "deep.png")
    np.testing.assert_array_equal(loaded, as_image(a[..., :3]))
    noisy = np.clip(a[..., :3].astype(np.int64) + rng.integers(-300, 300, (70, 66, 3)), 0,
                    65535).astype(np.uint16)
    by_file = scorer.score(loaded, load_image_bytes(png16(noisy), "noisy.png"))
    assert abs(by_file - scorer.score(a[..., :3], noisy)) <= tolerance("onnx_score").atol


def test_16_bit_grey_png_keeps_16_bits():
    a = np.random.default_rng(1).integers(0, 65536, (64, 70, 1), dtype=np.uint16)
    np.testing.assert_array_equal(load_image_bytes(png16(a), "grey.png"), as_image(a[..., 0]))
    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="PNG")  # Pillow's own 16-bit grey writer
    np.testing.assert_array_equal(load_image_bytes(buf.getvalue(), "g.png"), as_image(a[..., 0]))


def mpo_bytes(first: np.ndarray, second: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, format="MPO", save_all=True,
                                append_images=[Image.fromarray(second)], quality=95)
    return buf.getvalue()


def test_mpo_gives_its_first_frame():
    rng = np.random.default_rng(2)
    first = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    data = mpo_bytes(first, 255 - first)
    assert image_header(data, "phone.jpg")[0] == "MPO"
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 2
        expected = np.asarray(im.convert("RGB"))  # frame 0
    np.testing.assert_array_equal(load_image_bytes(data, "phone.jpg"), as_image(expected))


# ---- fuzzing: mutated files give an image or an ImageError, nothing else ----

#: small enough that a mutated header declaring a huge image is refused, not allocated
FUZZ_PIXELS = 1_000_000
#: derandomized: the examples follow from the test's code, not the clock (deterministic)
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = (rng.random((64, 72, 3)) * 255).astype(np.uint8)
    out = []
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 90}), ("TIFF", {}),
                    ("TIFF", {"compression": "tiff_lzw"}),
                    ("TIFF", {"compression": "tiff_adobe_deflate"})):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(buf, format="TIFF", compression="packbits")
    out.append(buf.getvalue())
    out.append(png16(rng.integers(0, 65536, (64, 66, 3), dtype=np.uint16)))
    out.append(mpo_bytes(rgb, rgb[::-1].copy()))
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    """A seed file with a few bytes overwritten, a run inserted or deleted, or a cut end."""
    data = bytearray(SEEDS[draw(st.integers(0, len(SEEDS) - 1))])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "set", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[max(at, 8):]
        if len(data) < 2:
            break
    return bytes(data)


def _check_image(a: np.ndarray) -> None:
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape[0] * a.shape[1] <= FUZZ_PIXELS
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged TIFF tags
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@settings(FUZZ, max_examples=400)
@given(data=mutated())
def test_mutated_files_decode_or_raise_image_errors(data):
    try:
        image = load_image_bytes(data, "fuzz", max_pixels=FUZZ_PIXELS)
    except ImageError:
        return
    _check_image(image)


# ---- the CLI ----


def test_score_cli_holds_images_to_max_pixels(tmp_path):
    import subprocess
    import sys

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(big)
    cmd = [sys.executable, "-m", "cdiqa.cli", "score", str(big), str(big)]
    out = subprocess.run(cmd + ["--max-pixels", "6000"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr
    assert "got 80x80 (6400 pixels), expected at most 6000 pixels" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(cmd + ["--max-pixels", "0"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "Option for pixel budget 'max_pixels'" in out.stderr, \
        out.stderr
