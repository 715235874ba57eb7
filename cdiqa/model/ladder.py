"""Severity ladders: references distorted by every kind at every level, and what is measured
on them (numpy, no torch: the torch-free cross-domain benchmark and calibration gates use it).

::

    reference r x kind k x level l ─► distort(seed = pair_seed(seed, name_r, k, l)) ─► 8 bits
        ─► Ladder(refs, names, ref_index, kinds, levels, dists), rows grouped by reference

A ladder's known order is the severity of its rungs (``DistortionType.severity``): the level,
or for a kind whose levels pass through identity (Mean_Shift, Contrast_Change) the distance
from it; kinds that are not registered distortions (``real_ladder``'s "real") rank by level.
No opinion score anywhere. Users: the development benchmark (``cdiqa.model.evaluate``, whose
``PairSet`` adds KADID targets), calibration (head fitting, accuracy gates) and the
cross-domain benchmark (``cdiqa.calibration.evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from cdiqa import metrics
from cdiqa.model.distortions import LEVELS

#: called after each rendered or scored row: (done, total)
Step = Callable[[int, int], None]


def round_to_8bit(image: np.ndarray) -> np.ndarray:
    """float32 rounded to 8 bits, as a saved image would be."""
    return (np.round(np.clip(image, 0, 1) * 255) / 255).astype(np.float32)


@dataclass
class Ladder:
    """Distorted copies of references at every level; ``severity`` is the known order."""

    refs: list[np.ndarray]
    names: list[str]
    ref_index: np.ndarray  # (N,) row -> refs
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
        """Known severity rank of every row (``DistortionType.severity``). Rank correlations
        against the known order use ``-severity``, never ``-levels``."""
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


def _assemble(refs: list[np.ndarray], names: list[str],
              rungs: Iterable[tuple[int, str, int, np.ndarray]], total: int,
              step: Step | None) -> Ladder:
    """The ladder of ``rungs``: (reference index, kind, level, distorted image) in row order."""
    out = Ladder(refs, names, np.zeros(0, int), [], np.zeros(0, int), [])
    idx, lv = [], []
    for r, kind, level, dist in rungs:
        out.dists.append(round_to_8bit(dist))
        out.kinds.append(kind)
        idx.append(r)
        lv.append(level)
        if step is not None:
            step(len(out.dists), total)
    out.ref_index, out.levels = np.array(idx, int), np.array(lv, int)
    return out


def ladder(references: Sequence[np.ndarray], kinds: Sequence[str], *, names=None,
           levels: Sequence[int] = LEVELS, seed: int = 0, step: Step | None = None) -> Ladder:
    """Every reference x kind x level, 8-bit, seeded per (reference name, kind, level).

    ``names`` default to ref0, ref1, ...: they are part of each pair's seed, so the same
    reference under another name gets other noise."""
    from cdiqa.model.distortions import distort, pair_seed

    names = list(names) if names is not None else [f"ref{i}" for i in range(len(references))]
    refs, kinds = [round_to_8bit(img) for img in references], list(kinds)
    rungs = ((r, kind, level, distort(ref, kind, level, seed=pair_seed(seed, names[r], kind,
                                                                        level)))
             for r, ref in enumerate(refs) for kind in kinds for level in levels)
    return _assemble(refs, names, rungs, len(refs) * len(kinds) * len(levels), step)


def real_ladder(pairs, steps: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> Ladder:
    """A ladder of real degradations: ``ref + t (dist - ref)`` for each step t.

    A real pair (an underwater photograph and its enhanced version, a lossless and a lossy
    DICOM) has no severity label, but more of its own degradation is worse: t orders the
    rungs, kind "real", level 1.. in step order. ``pairs``: objects with ``name``, ``ref``
    and ``dist``.
    """
    pairs = list(pairs)
    refs = [round_to_8bit(p.ref) for p in pairs]
    rungs = ((r, "real", level, ref + t * (round_to_8bit(p.dist) - ref))
             for r, (p, ref) in enumerate(zip(pairs, refs))
             for level, t in enumerate(steps, start=1))
    return _assemble(refs, [p.name for p in pairs], rungs, len(pairs) * len(steps), None)


def monotone(lad: Ladder, scores: np.ndarray) -> float:
    """Fraction of (reference, kind) sequences whose score never rises with the severity
    (``Ladder.ordered_pairs``: a kind with an identity level is checked on each side)."""
    seqs = lad.sequences()
    ok = sum(all(scores[a] >= scores[b] for a, b in lad.ordered_pairs(rows)) for rows in seqs)
    return ok / max(1, len(seqs))


def srcc_within(groups, scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """SRCC of ``scores`` against ``target`` within each group (first-seen order)."""
    groups = np.asarray(groups)
    return {g: metrics.srcc(scores[groups == g], target[groups == g])
            for g in dict.fromkeys(groups.tolist())}


def per_kind_srcc(lad: Ladder, scores: np.ndarray) -> dict[str, float]:
    """SRCC against -severity within each kind (KADID's per-type SRCC): how well each kind
    is ranked, whatever the generator says about how kinds compare at equal level."""
    return srcc_within(lad.kinds, scores, -lad.severity)


def resample_groups(groups: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n`` bootstrap resamples of whole groups (``groups``: each row's
    reference or source image), drawn with replacement and seeded."""
    groups = np.asarray(groups)
    rows = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng([seed, 7])
    return [np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
            for _ in range(n)]


def metric_scores(lad: Ladder, step: Step | None = None) -> dict[str, np.ndarray]:
    """The training-free metrics of every pair, higher is better (``metrics.pair_scores``)."""
    return metrics.pair_scores(lad.pairs(), step)
