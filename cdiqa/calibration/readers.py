"""What calibration reads: domain pairs for the INT8 ranges.

A calibration reader (STYLE.md 7) is an ``Iterable[Mapping[str, np.ndarray]]`` of graph feeds
with a ``domain`` attribute; ``ort_reader`` adapts one to ONNX Runtime's
``CalibrationDataReader``. The severity ladders that head fitting, gates and the cross-domain
benchmark use are ``cdiqa.model.ladder``'s, shared with the development benchmark.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI
from cdiqa.model.ladder import round_to_8bit


def _feed(ref: np.ndarray, dist: np.ndarray) -> dict[str, np.ndarray]:
    h, w = ref.shape[:2]
    chw = lambda x: np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)  # noqa: E731
    return {INPUT_REF: chw(ref), INPUT_DIST: chw(dist),
            INPUT_ROI: np.array([[0, 0, h, w]], np.int32)}


class DomainReader:
    """Feeds of (reference crop, distorted crop) pairs of a domain, for INT8 ranges.

    Each item is one pair, batch 1: a random ``size`` x ``size`` crop of a random reference,
    distorted by a random degradation of the domain at a random level. Same seed, same feeds.

    Args:
        domain: the domain's name (recorded in the cache).
        references: float32 RGB (H, W, 3) images.
        kinds: degradation names (``degradations_for(domain)``).
        count: number of feeds.
        size: crop side; when a reference is smaller, every crop takes the smallest
            reference side instead, so all feeds share one shape (the histogram methods,
            percentile and entropy, stack them).
        seed: the only source of randomness.
    """

    def __init__(self, domain: str, references: Sequence[np.ndarray], kinds: Sequence[str],
                 count: int = 24, size: int = 128, seed: int = 0) -> None:
        self.domain = domain
        self.references, self.kinds = list(references), list(kinds)
        self.count, self.size, self.seed = int(count), int(size), int(seed)

    def __len__(self) -> int:
        return self.count

    @property
    def crop_size(self) -> int:
        """Side of every feed: ``size``, or the smallest reference side when that is less."""
        return min([self.size] + [min(r.shape[:2]) for r in self.references])

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        from cdiqa.model.distortions import distort

        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            img = self.references[rng.integers(len(self.references))]
            h, w = img.shape[:2]
            s = self.crop_size
            y, x = rng.integers(h - s + 1), rng.integers(w - s + 1)
            ref = round_to_8bit(img[y: y + s, x: x + s])
            kind = self.kinds[rng.integers(len(self.kinds))]
            dist = distort(ref, kind, int(rng.integers(1, 6)), seed=int(rng.integers(2**62)))
            yield _feed(ref, round_to_8bit(dist))


def ort_reader(reader):
    """ONNX Runtime's ``CalibrationDataReader`` over any iterable of feeds."""
    from cdiqa import _lazy

    q = _lazy.lazy_import("onnxruntime.quantization", purpose="INT8 calibration")

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(reader)

        def get_next(self):
            return next(self._it, None)

        def __len__(self) -> int:
            return len(reader)

    return _Reader()
