"""Progress reports of long library calls, without any UI: the CLI draws them (rich).

A library function takes ``progress(stage, done, total)``, called with ``done`` never falling
and a last call with ``done == total``; ``stage`` names the step now running.
"""

from __future__ import annotations

from typing import Callable, Mapping

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]
#: stage of the last report (``done == total``)
DONE = "done"


def stepper(progress: Progress | None, weights: Mapping[str, int]) -> Callable[[str], None]:
    """``step(name)`` reports that step ``name`` starts, every step before it being done;
    ``step(DONE)`` reports the end.

    Args:
        progress: the caller's callback, or None (then ``step`` does nothing).
        weights: every step in order, with its share of the work (what makes an ETA right
            when steps differ in length).

    >>> seen = []
    >>> step = stepper(lambda *a: seen.append(a), {"load": 1, "export": 3})
    >>> step("load"); step("export"); step(DONE)
    >>> seen
    [('load', 0, 4), ('export', 1, 4), ('done', 4, 4)]
    """
    total = sum(weights.values())
    before, done = {}, 0
    for name, weight in weights.items():
        before[name], done = done, done + weight
    before[DONE] = total

    def step(name: str) -> None:
        if progress is not None:
            progress(name, before[name], total)

    return step
