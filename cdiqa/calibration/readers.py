"""What calibration reads: domain pairs for the INT8 ranges, and severity ladders for gates.

A calibration reader (STYLE.md 7) is an ``Iterable[Mapping[str, np.ndarray]]`` of graph feeds
with a ``domain`` attribute; ``ort_reader`` adapts one to ONNX Runtime's
``CalibrationDataReader``. A ``Ladder`` is every reference distorted by every degradation of
the domain at levels 1..5 (8-bit, seeded): its level order is the "known severity" that
adaptation, gates and the cross-domain benchmark use; no opinion score anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI
from cdiqa.model.distortions import LEVELS



def _q8(image: np.ndarray) -> np.ndarray:
    """Round to 8 bits, as a saved image would be."""
    return (np.round(np.clip(image, 0, 1) * 255) / 255).astype(np.float32)


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
            ref = _q8(img[y: y + s, x: x + s])
            kind = self.kinds[rng.integers(len(self.kinds))]
            dist = _q8(distort(ref, kind, int(rng.integers(1, 6)), seed=int(rng.integers(2**62))))
            yield _feed(ref, dist)


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


@dataclass
class Ladder:
    """Distorted copies of references at every level; ``level`` is the known severity."""

    refs: list[np.ndarray]
    names: list[str]
    ref_index: np.ndarray
    kinds: list[str]
    levels: np.ndarray
    dists: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.dists)

    def pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ref, dist) per row, grouped by reference."""
        return [(self.refs[i], d) for i, d in zip(self.ref_index, self.dists)]

    @property
    def severity(self) -> np.ndarray:
        """Known severity rank of every row (``DistortionType.severity``): the level, or for
        a kind whose levels pass through identity (Mean_Shift, Contrast_Change) the distance
        from it. Rank correlations against the known order use ``-severity``, never
        ``-levels``. Kinds that are not registered distortions ("real") rank by level."""
        return np.array([_severity(k, int(lv)) for k, lv in zip(self.kinds, self.levels)])

    def ordered_pairs(self, rows: np.ndarray) -> list[tuple[int, int]]:
        """Row pairs (milder, stronger) of one ``sequences()`` entry whose order is known
        (``DistortionType.severity_pairs``: the two sides of an identity level are never
        compared)."""
        by_level = {int(self.levels[i]): int(i) for i in rows}
        return [(by_level[a], by_level[b]) for a, b in _level_pairs(self.kinds[rows[0]])
                if a in by_level and b in by_level]

    def sequences(self) -> list[np.ndarray]:
        """Row indices of each (reference, kind) sequence, in level order."""
        kinds = np.array(self.kinds)
        out = []
        for r in range(len(self.refs)):
            for k in dict.fromkeys(self.kinds):
                rows = np.flatnonzero((self.ref_index == r) & (kinds == k))
                if len(rows):
                    out.append(rows[np.argsort(self.levels[rows])])
        return out


def _kind(name: str):
    from cdiqa.errors import ConfigError
    from cdiqa.model.distortions import distortion_type

    try:
        return distortion_type(name)
    except ConfigError:  # "real" rungs and other unregistered kinds: ordered by level
        return None


def _severity(kind: str, level: int) -> int:
    t = _kind(kind)
    return level if t is None else t.severity(level)


def _level_pairs(kind: str) -> tuple[tuple[int, int], ...]:
    t = _kind(kind)
    if t is None:
        return tuple((i, j) for i in LEVELS for j in LEVELS if i < j)
    return t.severity_pairs()


def ladder(references: Sequence[np.ndarray], kinds: Sequence[str], *, names=None,
           levels: Sequence[int] = LEVELS, seed: int = 0) -> Ladder:
    """Every reference x kind x level, 8-bit, seeded per (reference, kind, level)."""
    from cdiqa.model.distortions import distort, pair_seed

    names = list(names) if names is not None else [f"ref{i}" for i in range(len(references))]
    out = Ladder([], names, np.zeros(0, int), [], np.zeros(0, int), [])
    idx, lv = [], []
    for r, img in enumerate(references):
        ref = _q8(img)
        out.refs.append(ref)
        for kind in kinds:
            for level in levels:
                out.dists.append(_q8(distort(ref, kind, level,
                                             seed=pair_seed(seed, names[r], kind, level))))
                out.kinds.append(kind)
                idx.append(r)
                lv.append(level)
    out.ref_index, out.levels = np.array(idx, int), np.array(lv, int)
    return out


def real_ladder(pairs, steps: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> Ladder:
    """A ladder of real degradations: ``ref + t (dist - ref)`` for each step t.

    A real pair (an underwater photograph and its enhanced version, a lossless and a lossy
    DICOM) has no severity label, but more of its own degradation is worse: t orders the
    rungs. ``pairs``: objects with ``name``, ``ref`` and ``dist``.
    """
    out = Ladder([], [], np.zeros(0, int), [], np.zeros(0, int), [])
    idx, lv = [], []
    for r, p in enumerate(pairs):
        ref = _q8(p.ref)
        out.refs.append(ref)
        out.names.append(p.name)
        for level, t in enumerate(steps, start=1):
            out.dists.append(_q8(ref + t * (_q8(p.dist) - ref)))
            out.kinds.append("real")
            idx.append(r)
            lv.append(level)
    out.ref_index, out.levels = np.array(idx, int), np.array(lv, int)
    return out
