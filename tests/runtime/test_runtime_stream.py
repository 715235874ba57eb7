"""StreamScorer: order, futures, micro-batches, backpressure, errors, lossless close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import ConfigError, ImageError, ShapeError
from cdiqa.runtime.stream import QueueFull, StreamClosed, StreamScorer


class FakeScorer:
    """Scores a pair by its distorted image's mean; records batch sizes; can be held."""

    max_batch = 4

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.max_height = 10_000

    def score_pairs(self, pairs):
        self.gate.wait(10)
        self.batches.append(len(pairs))
        if self.fail:
            raise ImageError("boom")
        for r, _ in pairs:  # as a TensorRT engine refuses shapes beyond its profile
            if r.shape[0] > self.max_height:
                raise ShapeError(f"Height for tensor 'ref': got {r.shape[0]}, expected at "
                                 f"most {self.max_height}. Use a larger profile.")
        return np.array([float(d.mean()) for _, d in pairs])


def _pair(value: float, size: int = 64):
    ref = np.zeros((size, size, 3), np.float32)
    return ref, np.full((size, size, 3), value, np.float32)


def _wait_running(future, seconds: float = 10) -> None:
    """Until the worker has taken ``future`` (it then holds it at the scorer's gate)."""
    deadline = time.monotonic() + seconds
    while not future.running():
        assert time.monotonic() < deadline, "the worker never took the item"
        time.sleep(0.005)


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
    _wait_running(first)  # the worker has taken `first` and waits at the gate
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
    _wait_running(stream.submit(*_pair(0.1)))
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


def test_a_failing_pair_fails_only_its_own_future() -> None:
    fake = FakeScorer()
    fake.max_height = 80
    alone = {v: fake.score_pairs([_pair(v)])[0] for v in (0.2, 0.3, 0.5)}
    fake.batches.clear()
    fake.gate.clear()
    with StreamScorer(fake, max_batch=4, max_wait=0.0) as stream:
        first = stream.submit(*_pair(0.1))
        _wait_running(first)  # the next four wait in the queue and leave it as one batch
        good = {v: stream.submit(*_pair(v)) for v in (0.2, 0.3)}
        bad = stream.submit(*_pair(0.4, size=96))
        good[0.5] = stream.submit(*_pair(0.5))
        fake.gate.set()
        with pytest.raises(ShapeError, match=r"^Height for tensor 'ref': got 96, expected at "
                                             r"most 80\. Use a larger profile\.$"):
            bad.result(5)
        assert {v: f.result(5) for v, f in good.items()} == alone
    assert fake.batches == [1, 4, 1, 1, 1, 1]  # the failed batch, then each pair alone


def test_close_timeout_returns_while_the_worker_is_busy() -> None:
    fake = FakeScorer()
    fake.gate.clear()  # the worker holds its first item until the gate opens
    stream = StreamScorer(fake, max_batch=1, max_queue=1)
    first = stream.submit(*_pair(0.1))
    _wait_running(first)
    queued = stream.submit(*_pair(0.2))  # the queue is full now
    blocked: list = []

    def submit_blocking() -> None:  # waits for room: held the lock close() needed before
        try:
            stream.submit(*_pair(0.3))
        except Exception as exc:
            blocked.append(exc)

    submitter = threading.Thread(target=submit_blocking, daemon=True)
    submitter.start()
    closer_result: list = []
    closer = threading.Thread(target=lambda: closer_result.append(stream.close(0.05)),
                              daemon=True)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and closer_result == [False]  # returned, worker still busy
    submitter.join(30)
    assert len(blocked) == 1 and isinstance(blocked[0], StreamClosed)
    fake.gate.set()
    assert stream.close() is True  # the accepted items are still scored
    assert (first.result(), queued.result()) == pytest.approx((0.1, 0.2))


@pytest.mark.parametrize("option, value, expected", [
    ("max_wait", float("inf"), "a finite number in [0, 9223372036]"),
    ("max_wait", float("nan"), "a finite number in [0, 9223372036]"),
    ("max_wait", -0.001, "a finite number in [0, 9223372036]"),
    ("max_batch", 0, "an integer >= 1"),
    ("max_batch", 2.5, "an integer >= 1"),
    ("max_queue", 0, "an integer >= 1"),
    ("max_queue", True, "an integer >= 1"),
])
def test_numeric_options_are_refused_naming_the_option(option, value, expected) -> None:
    message = (f"Option for stream '{option}': got {value!r}, expected {expected}. Fix the "
               "StreamScorer options.")
    with pytest.raises(ConfigError) as info:
        StreamScorer(FakeScorer(), **{option: value})
    assert str(info.value) == message


def test_wait_arguments_are_checked_and_inf_waits_without_limit() -> None:
    with StreamScorer(FakeScorer()) as stream:
        with pytest.raises(ConfigError, match=r"^Option for argument 'timeout': got nan, "
                                              r"expected a finite number in \[0, "):
            stream.submit(*_pair(0.1), timeout=float("nan"))
        assert stream.submit(*_pair(0.2), timeout=float("inf")).result(5) == pytest.approx(0.2)
        with pytest.raises(ConfigError, match=r"Option for argument 'timeout': got -1"):
            stream.close(-1)
        assert stream.close(float("inf")) is True


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


def test_items_past_their_deadline_are_abandoned_unscored():
    from cdiqa.errors import Abandoned

    class Entered(FakeScorer):
        def __init__(self) -> None:
            super().__init__()
            self.entered = threading.Event()

        def score_pairs(self, pairs, **kw):
            self.entered.set()
            return super().score_pairs(pairs)

    scorer = Entered()
    scorer.gate.clear()
    with StreamScorer(scorer, max_wait=0) as stream:
        first = stream.submit(*_pair(0.25))
        assert scorer.entered.wait(10)  # the worker holds the first item in score_pairs
        deadline = time.monotonic() + 0.05
        late = stream.submit(*_pair(0.5), deadline=deadline)
        while time.monotonic() <= deadline:
            time.sleep(0.01)
        scorer.gate.set()
        assert first.result(10) == pytest.approx(0.25)
        with pytest.raises(Abandoned, match="Deadline for stream item 'submit'"):
            late.result(10)
    assert scorer.batches == [1]  # the late item never reached the scorer
