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
- Shutdown: ``close()`` refuses new items, then the worker finishes every item already
  submitted before it stops: nothing submitted is lost.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Iterable, Iterator

import numpy as np

from cdiqa.errors import CdiqaError, ConfigError, describe
from cdiqa.images import check_pair
from cdiqa.runtime.preprocess import image_from, pair_from

_STOP = object()


class QueueFull(CdiqaError):
    """The stream's queue stayed full for the whole wait."""


class StreamClosed(CdiqaError):
    """An item was submitted after ``close()``."""


class StreamScorer:
    """Micro-batching front of a ``Scorer`` for pipelines (cameras, scanners).

    Args:
        scorer: a loaded ``cdiqa.runtime.Scorer``.
        max_batch: most items scored in one call (None: the scorer's ``max_batch``).
        max_wait: seconds the worker waits for more items once it has one.
        max_queue: items that may wait; more make ``submit`` block or raise.
        reference: a fixed reference image; ``submit`` then takes frames only.
    """

    def __init__(self, scorer, *, max_batch: int | None = None, max_wait: float = 0.005,
                 max_queue: int = 64, reference=None) -> None:
        self.scorer = scorer
        self.max_batch = int(max_batch or scorer.max_batch)
        self.max_wait = float(max_wait)
        if self.max_batch < 1 or self.max_wait < 0 or max_queue < 1:
            raise ConfigError(describe("Options", "stream", "StreamScorer",
                                       (self.max_batch, self.max_wait, max_queue),
                                       "max_batch >= 1, max_wait >= 0, max_queue >= 1",
                                       "Fix the stream options"))
        self.reference = None if reference is None else image_from(reference, "reference")
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="cdiqa-stream", daemon=True)
        self._worker.start()

    def submit(self, ref, dist=None, *, block: bool = True, timeout: float | None = None
               ) -> Future:
        """Queue one pair (or one frame against the fixed reference); returns its Future.

        Images are loaded and checked here, so a bad image raises in the caller.

        Raises:
            QueueFull: the queue stayed full (``block=False``, or for ``timeout`` seconds).
            StreamClosed: after ``close()``.
        """
        pair = self._pair(ref, dist)
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise StreamClosed("Submit for stream 'StreamScorer': got an item after close(), "
                                   "expected none. Create a new StreamScorer.")
            try:
                self._queue.put((pair, future), block=block, timeout=timeout)
            except queue.Full:
                raise QueueFull(describe("Queue", "stream", "submit",
                                         f"{self._queue.maxsize} items waiting",
                                         "a free slot", "Wait and retry, raise max_queue, or "
                                         "pass a longer timeout")) from None
        return future

    def map(self, items: Iterable, *, timeout: float | None = None) -> Iterator[float]:
        """Scores of ``items`` ((ref, dist) pairs, or frames with a fixed reference), in order.

        Keeps at most ``max_queue`` items in flight, so an endless iterable streams.
        """
        pending: deque[Future] = deque()
        for item in items:
            if len(pending) >= self._queue.maxsize:
                yield pending.popleft().result(timeout)
            pending.append(self.submit(*item) if self.reference is None else self.submit(item))
        while pending:
            yield pending.popleft().result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, finish every item already submitted, stop the worker."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._worker.join(timeout)

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
            return pair_from(ref, dist)
        if dist is not None:
            raise ConfigError(describe("Arguments", "stream", "submit", "two images",
                                       "one frame (the reference is fixed)",
                                       "Pass only the frame"))
        frame = image_from(ref, "frame")
        check_pair(self.reference, frame, "reference", "frame")
        return self.reference, frame

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._score(batch)

    def _score(self, batch: list) -> None:
        live = [(pair, f) for pair, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            scores = self.scorer.score_pairs([pair for pair, _ in live])
        except Exception as exc:  # every waiting caller gets the error, the worker lives
            for _, f in live:
                f.set_exception(exc)
            return
        for (_, f), s in zip(live, scores):
            f.set_result(float(s))
