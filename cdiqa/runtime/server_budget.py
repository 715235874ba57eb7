"""Admission by decoded pixels: the server's bound on the memory of work in flight.

A request is admitted only if the decoded pixels of all its images (width x height from
each header, counted before any pixel is decoded) fit in what is left of the budget; they
are held from before decoding until its last pair is scored or abandoned. A pair count
(the stream's ``max_queue``) bounds nothing: one 38 KB PNG can decode to 40 MP, 475 MB as
float32 RGB. With the budget, the images held decoded at any time take at most about
``limit`` x 12 bytes (float32 RGB), plus one image being converted.
"""

from __future__ import annotations

import threading


class PixelBudget:
    """A thread-safe count of decoded pixels in flight, at most ``limit``.

    >>> budget = PixelBudget(100)
    >>> budget.try_acquire(60), budget.try_acquire(60), budget.in_use
    (True, False, 60)
    >>> budget.release(60); budget.in_use
    0
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self, pixels: int) -> bool:
        """Take ``pixels`` if they fit now; never waits (the caller answers 503)."""
        with self._lock:
            if self.in_use + pixels > self.limit:
                return False
            self.in_use += pixels
            return True

    def release(self, pixels: int) -> None:
        """Give back what ``try_acquire`` took."""
        with self._lock:
            self.in_use -= pixels


def release_when_done(budget: PixelBudget, pixels: int, futures: list) -> None:
    """Release ``pixels`` once every future in ``futures`` is done (scored, failed,
    abandoned or cancelled); at once if there are none."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            budget.release(pixels)

    if not futures:
        budget.release(pixels)
    for f in futures:
        f.add_done_callback(one_done)
