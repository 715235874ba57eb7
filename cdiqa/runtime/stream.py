"""Streaming: score pairs as they arrive, in micro-batches, with backpressure.

::

    submit(ref, dist) ─► load + check (caller's thread) ─► bounded queue ─► worker thread
          │                                                   (max_queue)     │ takes up to
          ▼                                                                   │ max_batch items,
       Future ◄──────────────── result / exception ◄── Scorer (grouped by size) ◄ waiting at most
                                                                                max_wait for more

- Backpressure: when ``max_queue`` items wait, ``submit`` blocks (``timeout=None``), waits up to
  ``timeout`` seconds, or with ``block=False`` raises ``QueueFull`` at once.
- Order: ``submit`` returns a ``concurrent.futures.Future``; ``map`` yields results in
  submission order.
- Fixed reference: ``StreamScorer(scorer, reference=img)`` then ``submit(frame)``: every frame is
  scored against the one reference (loaded and checked once).
- Failure isolation: when a micro-batch fails, its pairs are scored again one by one, so a
  pair the scorer rejects (an image over a TensorRT profile's largest shape, say) fails only
  its own future and the others get the scores they get alone. A failure of every pair (a
  broken session) costs one call per pair, each future getting its own error.
- Deadlines: ``submit(..., deadline=t)`` (a ``time.monotonic()`` time) marks when nobody
  waits for the score any more (a timed-out request): an item past it is dropped before it
  is scored, and a tiled pair stops between tile batches; its future gets ``Abandoned``.
- Pixel budget: images are held to the scorer's ``max_pixels`` (``cdiqa.images``).
- Shutdown: ``close()`` refuses new items (a ``submit`` waiting for room raises
  ``StreamClosed``), then the worker finishes every item already queued before it stops:
  nothing accepted is lost. ``close(timeout)`` returns after at most ``timeout`` seconds even
  if the worker is still busy; it keeps draining in the background.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Iterable, Iterator

import numpy as np

from cdiqa.errors import Abandoned, CdiqaError, ConfigError, ShapeError, describe
from cdiqa.images import check_pair
from cdiqa.runtime.preprocess import image_from, pair_from

#: longest wait ``threading`` accepts (longer ones raise OverflowError in the waiting thread)
MAX_SECONDS = float(int(threading.TIMEOUT_MAX))


class QueueFull(CdiqaError):
    """The stream's queue stayed full for the whole wait."""


class StreamClosed(CdiqaError):
    """An item was submitted after ``close()``."""


def check_option(kind: str, name: str, value, *, integer: bool = False, low: float = 0,
                 low_open: bool = False, high: float | None = None,
                 fix: str = "Fix the option") -> None:
    """Raise ``ConfigError`` naming option ``name`` unless ``value`` is a number in range.

    Integers (``integer=True``) must be ``int`` (not bool, not float); other numbers must be
    finite reals. The range is ``[low, high]``, or ``(low, high]`` with ``low_open``.

    >>> check_option("stream", "max_wait", float("inf"), fix="Pass seconds")
    Traceback (most recent call last):
    ...
    cdiqa.errors.ConfigError: Option for stream 'max_wait': got inf, expected a finite number >= 0. Pass seconds.
    """
    ok_type = (isinstance(value, numbers.Integral) if integer else
               isinstance(value, numbers.Real) and math.isfinite(value))
    bound = f"> {_number(low)}" if low_open else f">= {_number(low)}"
    if high is not None:
        bound = f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}]"
    expected = f"{'an integer' if integer else 'a finite number'} {bound}"
    if (isinstance(value, bool) or not ok_type or value < low or (low_open and value == low)
            or (high is not None and value > high)):
        raise ConfigError(describe("Option", kind, name, repr(value), expected, fix))


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _seconds(value: float | None, name: str) -> float | None:
    """A wait argument: None or inf wait forever, else finite seconds >= 0."""
    if value is None or value == math.inf:
        return None
    check_option("argument", name, value, high=MAX_SECONDS,
                 fix="Pass seconds, or None to wait without limit")
    return float(value)


class StreamScorer:
    """Micro-batching front of a ``Scorer`` for pipelines (cameras, scanners).

    Args:
        scorer: a loaded ``cdiqa.runtime.Scorer``.
        max_batch: most items scored in one call (None: the scorer's ``max_batch``).
        max_wait: seconds the worker waits for more items once it has one (finite, >= 0).
        max_queue: items that may wait; more make ``submit`` block or raise.
        reference: a fixed reference image; ``submit`` then takes frames only.

    Raises:
        ConfigError: an option that is not a number in range (naming the option).
    """

    def __init__(self, scorer, *, max_batch: int | None = None, max_wait: float = 0.005,
                 max_queue: int = 64, reference=None) -> None:
        max_batch = scorer.max_batch if max_batch is None else max_batch
        fix = "Fix the StreamScorer options"
        check_option("stream", "max_batch", max_batch, integer=True, low=1, fix=fix)
        check_option("stream", "max_wait", max_wait, high=MAX_SECONDS, fix=fix)
        check_option("stream", "max_queue", max_queue, integer=True, low=1, fix=fix)
        self.scorer = scorer
        self.max_batch, self.max_wait, self.max_queue = int(max_batch), float(max_wait), \
            int(max_queue)
        self._max_pixels = getattr(scorer, "max_pixels", None)
        self.reference = (None if reference is None
                          else image_from(reference, "reference", self._max_pixels))
        # One condition guards the queue and the closed flag; nobody blocks while holding it
        # (waits release it), so close() never waits behind a blocked submit.
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="cdiqa-stream", daemon=True)
        self._worker.start()

    def submit(self, ref, dist=None, *, block: bool = True, timeout: float | None = None,
               deadline: float | None = None) -> Future:
        """Queue one pair (or one frame against the fixed reference); returns its Future.

        Images are loaded and checked here, so a bad image raises in the caller.
        ``deadline``: a ``time.monotonic()`` time after which the pair is abandoned.

        Raises:
            QueueFull: the queue stayed full (``block=False``, or for ``timeout`` seconds).
            StreamClosed: after ``close()``, also while waiting for room.
        """
        pair = self._pair(ref, dist)
        wait = _seconds(timeout, "timeout") if block else 0.0
        future: Future = Future()
        with self._cond:
            room = self._cond.wait_for(lambda: self._closed or len(self._items) < self.max_queue,
                                       wait)
            if self._closed:
                raise StreamClosed("Submit for stream 'StreamScorer': got an item after close(), "
                                   "expected none. Create a new StreamScorer.")
            if not room:
                raise QueueFull(describe("Queue", "stream", "submit",
                                         f"{self.max_queue} items waiting",
                                         "a free slot", "Wait and retry, raise max_queue, or "
                                         "pass a longer timeout"))
            self._items.append((pair, future, deadline))
            self._cond.notify_all()
        return future

    def map(self, items: Iterable, *, timeout: float | None = None) -> Iterator[float]:
        """Scores of ``items`` ((ref, dist) pairs, or frames with a fixed reference), in order.

        Keeps at most ``max_queue`` items in flight, so an endless iterable streams.
        """
        pending: deque[Future] = deque()
        for item in items:
            if len(pending) >= self.max_queue:
                yield pending.popleft().result(timeout)
            pending.append(self.submit(*item) if self.reference is None else self.submit(item))
        while pending:
            yield pending.popleft().result(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting items; wait until every queued item is scored and the worker stops.

        Args:
            timeout: most seconds to wait (None or inf: until done). When it runs out the
                worker goes on with the remaining items in the background.

        Returns:
            True if the worker finished within the timeout.
        """
        wait = _seconds(timeout, "timeout")
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(wait)
        return not self._worker.is_alive()

    def __enter__(self) -> "StreamScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pair(self, ref, dist) -> tuple[np.ndarray, np.ndarray]:
        if self.reference is None:
            if dist is None:
                raise ConfigError(describe("Arguments", "stream", "submit", "one image",
                                           "(ref, dist)", "Pass both images, or create the "
                                           "stream with reference=..."))
            return pair_from(ref, dist, max_pixels=self._max_pixels)
        if dist is not None:
            raise ConfigError(describe("Arguments", "stream", "submit", "two images",
                                       "one frame (the reference is fixed)",
                                       "Pass only the frame"))
        frame = image_from(ref, "frame", self._max_pixels)
        check_pair(self.reference, frame, "reference", "frame")
        return self.reference, frame

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            self._score(batch)

    def _next_batch(self) -> list:
        """Up to ``max_batch`` items: waits for a first one, then up to ``max_wait`` for more
        (not after close: the rest is already queued). Empty once closed and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed)
            if not self._items:
                return []
            batch = [self._items.popleft()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                if self._items:
                    batch.append(self._items.popleft())
                    continue
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    break
                self._cond.wait(left)
            self._cond.notify_all()  # room for submitters waiting on a full queue
            return batch

    def _score(self, batch: list) -> None:
        live = [item for item in batch if item[1].set_running_or_notify_cancel()]
        now = time.monotonic()
        for item in [i for i in live if i[2] is not None and now > i[2]]:
            item[1].set_exception(_abandoned())
        live = [i for i in live if not i[1].done()]
        if not live:
            return
        try:
            scores = self._scores(live)
        except Exception as exc:  # the worker lives; find the pairs at fault
            if len(live) == 1:
                live[0][1].set_exception(exc)
            else:
                for item in live:
                    self._score_alone(item)
            return
        for (_, f, _), s in zip(live, scores):
            f.set_result(s)

    def _score_alone(self, item) -> None:
        if item[2] is not None and time.monotonic() > item[2]:
            item[1].set_exception(_abandoned())
            return
        try:
            score = self._scores([item])[0]
        except Exception as exc:
            item[1].set_exception(exc)
        else:
            item[1].set_result(score)

    def _scores(self, items: list) -> list[float]:
        """One scorer call, as floats; a wrong count is a failure (no future is left hanging).
        Deadlines go to the scorer only when an item has one (any ``score_pairs`` works)."""
        pairs = [pair for pair, _, _ in items]
        deadlines = [d for _, _, d in items]
        kw = {"deadlines": deadlines} if any(d is not None for d in deadlines) else {}
        scores = [float(s) for s in self.scorer.score_pairs(pairs, **kw)]
        if len(scores) != len(pairs):
            raise ShapeError(describe("Count", "scores", "score_pairs", len(scores),
                                      f"{len(pairs)} (one per pair)",
                                      "Return one score per pair from the scorer"))
        return scores


def _abandoned() -> Abandoned:
    return Abandoned("Deadline for stream item 'submit': got it passed before scoring, "
                     "expected an answer in time. The request timed out; nobody waits for it.")
