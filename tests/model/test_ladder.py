"""Severity ladders (cdiqa.model.ladder): seeded rungs, the known order, monotonicity."""

from __future__ import annotations

import numpy as np

from cdiqa import metrics
from cdiqa.model.ladder import (ladder, metric_scores, monotone, per_kind_srcc, resample_groups,
                                round_to_8bit)


def _refs(*shapes) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(s).astype(np.float32) for s in shapes]


def test_ladders_are_ordered_8bit_and_seeded_by_name():
    refs = _refs((64, 64, 3))
    steps = []
    a = ladder(refs, ("GBLUR", "haze"), step=lambda i, n: steps.append((i, n)))
    b = ladder(refs, ("GBLUR", "haze"))
    assert len(a) == 10 and all(np.array_equal(x, y) for x, y in zip(a.dists, b.dists))
    assert steps[0] == (1, 10) and steps[-1] == (10, 10)
    assert all(np.array_equal(d, round_to_8bit(d)) and d.dtype == np.float32 for d in a.dists)
    assert [list(a.levels[s]) for s in a.sequences()] == [[1, 2, 3, 4, 5]] * 2
    other = ladder(refs, ("haze",), names=["another name"])
    assert not np.array_equal(other.dists[0], a.dists[5])  # the name is part of the seed
    assert monotone(a, -a.levels.astype(float)) == 1.0
    assert monotone(a, a.levels.astype(float)) == 0.0


def test_a_kind_through_identity_is_ranked_by_its_distance_from_it():
    """Mean_Shift's level 3 is the reference itself, 1 and 5 are the strongest shifts (darker,
    brighter): the known order is the distance from 3, and the two sides never compare."""
    lad = ladder(_refs((64, 64, 3)), ("GBLUR", "Mean_Shift"))
    shift = np.array(lad.kinds) == "Mean_Shift"
    assert list(lad.severity[shift]) == [2, 1, 0, 1, 2]
    assert list(lad.severity[~shift]) == [1, 2, 3, 4, 5]
    perfect = -lad.severity.astype(float)  # a score that falls with the known severity
    perfect[shift] += np.array([0.0, 0.0, 0.0, 0.1, 0.1])  # brighter side: a milder ladder
    assert monotone(lad, perfect) == 1.0
    assert monotone(lad, -lad.levels.astype(float)) == 0.5  # by level: Mean_Shift fails


def test_metric_scores_are_higher_for_milder_rungs():
    lad = ladder(_refs((176, 176, 3)), ("GBLUR",), levels=(1, 5))
    scores = metric_scores(lad)
    assert {"PSNR", "SSIM", "GMSD", "HaarPSI"} <= set(scores)
    assert all(s.shape == (2,) and s[0] > s[1] for s in scores.values())


def test_per_kind_srcc_asks_only_for_each_kinds_own_order():
    """A score that ranks every kind perfectly but puts all of one kind below the other is
    1.0 per kind, while the pooled SRCC (level k of both kinds equally bad) is not."""
    lad = ladder(_refs((64, 64, 3), (64, 80, 3)), ("GBLUR", "haze"))
    score = -lad.severity.astype(float)
    score[np.array(lad.kinds) == "haze"] -= 10  # every haze rung below every blur rung
    assert per_kind_srcc(lad, score) == {"GBLUR": 1.0, "haze": 1.0}
    assert metrics.srcc(score, -lad.severity) < 0.8
    score[np.array(lad.kinds) == "GBLUR"] *= -1
    assert per_kind_srcc(lad, score)["GBLUR"] == -1.0


def test_resampling_draws_whole_groups_seeded():
    groups = np.repeat(np.array(["a", "b", "c", "d"]), [3, 5, 2, 4])
    draws = resample_groups(groups, 50, seed=1)
    sizes = {"a": 3, "b": 5, "c": 2, "d": 4}
    for rows in draws:
        picked, counts = np.unique(groups[rows], return_counts=True)
        assert all(c % sizes[g] == 0 for g, c in zip(picked, counts))  # whole groups only
        assert sum(c // sizes[g] for g, c in zip(picked, counts)) == 4  # as many as there are
    assert len({tuple(r) for r in draws}) > 10  # they differ
    again = resample_groups(groups, 50, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(draws, again))
