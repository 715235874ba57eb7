"""Severity ladders (cdiqa.model.ladder): seeded rungs, the known order, monotonicity."""

from __future__ import annotations

import numpy as np

from cdiqa.model.ladder import ladder, metric_scores, monotone, round_to_8bit


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
