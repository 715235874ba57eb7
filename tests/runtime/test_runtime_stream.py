"""StreamScorer: order, futures, micro-batches, backpressure, errors, lossless close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import ConfigError, ImageError
from cdiqa.runtime.stream import QueueFull, StreamClosed, StreamScorer


class FakeScorer:
    """Scores a pair by its distorted image's mean; records batch sizes; can be held."""

    max_batch = 4

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def score_pairs(self, pairs):
        self.gate.wait(10)
        self.batches.append(len(pairs))
        if self.fail:
            raise ImageError("boom")
        return np.array([float(d.mean()) for _, d in pairs])


def _pair(value: float, size: int = 64):
    ref = np.zeros((size, size, 3), np.float32)
    return ref, np.full((size, size, 3), value, np.float32)


def test_results_in_order_and_as_futures() -> None:
    fake = FakeScorer()
    items = [_pair(i / 20, 64 + 16 * (i % 3)) for i in range(20)]  # mixed sizes
    with StreamScorer(fake, max_wait=0.01) as stream:
        assert list(stream.map(items)) == pytest.approx([i / 20 for i in range(20)])
        futures = [stream.submit(*p) for p in items[:5]]
        assert [f.result(5) for f in futures] == pytest.approx([i / 20 for i in range(5)])
    assert max(fake.batches) <= 4


def test_micro_batches_fill_up_to_max_batch() -> None:
    fake = FakeScorer()
    fake.gate.clear()
    stream = StreamScorer(fake, max_batch=3, max_wait=0.05, max_queue=32)
    futures = [stream.submit(*_pair(0.5)) for _ in range(10)]
    fake.gate.set()
    assert all(f.result(5) == 0.5 for f in futures)
    stream.close()
    assert sum(fake.batches) == 10 and max(fake.batches) == 3 and fake.batches.count(3) >= 2


def test_backpressure_raise_and_timeout() -> None:
    fake = FakeScorer()
    fake.gate.clear()  # the worker holds its first batch, the queue fills
    stream = StreamScorer(fake, max_batch=1, max_queue=2)
    first = stream.submit(*_pair(0.1))
    time.sleep(0.05)  # the worker has taken `first` and waits at the gate
    stream.submit(*_pair(0.2))
    stream.submit(*_pair(0.3))
    with pytest.raises(QueueFull, match=r"Queue for stream 'submit': got 2 items waiting"):
        stream.submit(*_pair(0.4), block=False)
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        stream.submit(*_pair(0.4), timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    fake.gate.set()
    assert first.result(5) == pytest.approx(0.1)
    stream.close()


def test_blocking_submit_waits_for_room() -> None:
    fake = FakeScorer()
    fake.gate.clear()
    stream = StreamScorer(fake, max_batch=1, max_queue=1)
    stream.submit(*_pair(0.1))
    time.sleep(0.05)
    stream.submit(*_pair(0.2))
    threading.Timer(0.2, fake.gate.set).start()
    t0 = time.monotonic()
    last = stream.submit(*_pair(0.3))  # blocks until the worker frees a slot
    assert time.monotonic() - t0 >= 0.15
    assert last.result(5) == pytest.approx(0.3)
    stream.close()


def test_close_drains_everything_submitted() -> None:
    fake = FakeScorer()
    fake.gate.clear()
    stream = StreamScorer(fake, max_batch=2, max_queue=64)
    futures = [stream.submit(*_pair(i / 50)) for i in range(30)]
    threading.Timer(0.1, fake.gate.set).start()
    stream.close()
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == pytest.approx([i / 50 for i in range(30)])
    with pytest.raises(StreamClosed, match=r"after close\(\)"):
        stream.submit(*_pair(0.1))


def test_errors_reach_the_futures_and_the_worker_lives_on() -> None:
    fake = FakeScorer()
    with StreamScorer(fake, max_wait=0.0) as stream:
        fake.fail = True
        with pytest.raises(ImageError, match="boom"):
            stream.submit(*_pair(0.1)).result(5)
        fake.fail = False
        assert stream.submit(*_pair(0.2)).result(5) == pytest.approx(0.2)


def test_bad_images_raise_in_the_caller() -> None:
    with StreamScorer(FakeScorer()) as stream:
        with pytest.raises(ImageError, match=r"Size for image 'dist'"):
            stream.submit(np.zeros((64, 64, 3), np.float32), np.zeros((64, 80, 3), np.float32))
        with pytest.raises(ConfigError, match=r"Pass both images"):
            stream.submit(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ConfigError, match=r"max_batch >= 1"):
        StreamScorer(FakeScorer(), max_queue=0)


def test_fixed_reference_with_the_real_scorer(tiny_bundle: Path,
                                              natural_image: np.ndarray) -> None:
    pytest.importorskip("onnxruntime")
    from cdiqa.runtime import Scorer

    scorer = Scorer.load(tiny_bundle, backend="onnxruntime")
    rng = np.random.default_rng(0)
    frames = [np.clip(natural_image + rng.normal(0, s, natural_image.shape), 0, 1)
              .astype(np.float32) for s in (0.0, 0.02, 0.05, 0.1)]
    with StreamScorer(scorer, reference=natural_image, max_wait=0.01) as stream:
        got = list(stream.map(frames))
        with pytest.raises(ConfigError, match=r"Pass only the frame"):
            stream.submit(frames[0], frames[1])
    from cdiqa.tolerances import tolerance

    np.testing.assert_allclose(got, [scorer.score(natural_image, f) for f in frames], rtol=0,
                               atol=tolerance("onnx_score").atol)
    assert got[0] == 1.0
