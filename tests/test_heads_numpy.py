"""Applying quality heads in numpy (cdiqa.heads): range, best score, round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdiqa.errors import ManifestError, ShapeError
from cdiqa.heads import (FewShotHead, LabelFreeHead, SupervisedHead, load_head, read_head,
                         write_head)

D = 12


def _heads(rng: np.random.Generator) -> list:
    scale = rng.uniform(0.5, 2.0, D)
    return [
        LabelFreeHead(scale=scale, weights=rng.normal(size=D), method="pca", tau=0.7),
        LabelFreeHead(scale=scale, weights=rng.uniform(0, 1, D), method="energy", tau=0.3),
        LabelFreeHead(scale=scale, weights=rng.normal(size=(D, 3)), method="whitened"),
        FewShotHead(scale=scale, projection=rng.normal(size=(D, 4)), coef=rng.normal(size=4)),
        FewShotHead(scale=scale, form="energy", weights=rng.uniform(0, 1, D), coef=[0.8]),
        SupervisedHead(scale=scale, transform="identity", w1=rng.normal(size=(D, 5)),
                       b1=rng.normal(size=5), w2=rng.normal(size=5)),
        LabelFreeHead(scale=scale, weights=rng.normal(size=D), method="linear", tau=0.5,
                      floor=0.1),
    ]


@pytest.fixture
def heads(rng):
    return _heads(rng)


def _ids():
    return ["pca", "energy", "whitened", "few_shot", "few_shot_energy", "supervised", "linear"]


@pytest.mark.parametrize("i", range(len(_ids())), ids=_ids())
def test_identical_images_score_exactly_one_even_inside_a_batch(rng, i):
    head = _heads(rng)[i]
    v = np.abs(rng.normal(size=(6, D)))
    v[3] = 0.0
    q = head.score(v)
    assert q[3] == 1.0
    assert head.severity(np.zeros((1, D)))[0] == 0.0


@pytest.mark.parametrize("i", range(len(_ids())), ids=_ids())
def test_scores_lie_in_unit_interval_and_fall_with_severity(rng, i):
    head = _heads(rng)[i]
    v = np.abs(rng.normal(size=(200, D))) * rng.uniform(0, 50, (200, 1))
    q, g = head.score(v), head.severity(v)
    assert np.all((q >= 0) & (q <= 1))
    assert np.all(g >= 0)
    order = np.argsort(g)
    assert np.all(np.diff(q[order]) <= 0)  # strictly a decreasing map of g


def test_linear_head_floor_keeps_every_distorted_pair_below_one(rng):
    """Errors only where the weights are negative: without the floor such a pair would score
    exactly 1.0, as if undistorted."""
    w = np.array([1.0, -2.0, 0.5, -1.0] * (D // 4))
    head = LabelFreeHead(scale=np.ones(D), weights=w, method="linear", floor=0.1)
    v = np.zeros((1, D))
    v[0, w < 0] = 0.3
    assert head.severity(v)[0] > 0 and head.score(v)[0] < 1.0
    assert LabelFreeHead(scale=np.ones(D), weights=w, method="linear").score(v)[0] == 1.0
    assert load_head(head.to_dict()).floor == 0.1


@pytest.mark.parametrize("method, floor", [("linear", 1.0), ("linear", -0.1), ("pca", 0.1)])
def test_a_floor_outside_the_linear_head_or_its_range_is_refused(method, floor):
    from cdiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="Floor"):
        LabelFreeHead(scale=np.ones(D), weights=np.ones(D), method=method, floor=floor)


def test_energy_head_falls_along_every_ray_from_the_origin(rng):
    head = _heads(rng)[1]
    direction = np.abs(rng.normal(size=D))
    q = head.score(np.outer(np.linspace(0, 5, 30), direction))
    assert q[0] == 1.0 and np.all(np.diff(q) < 0)


@pytest.mark.parametrize("i", range(len(_ids())), ids=_ids())
def test_to_dict_round_trips_through_json(rng, i):
    head = _heads(rng)[i]
    v = np.abs(rng.normal(size=(7, D)))
    again = load_head(json.loads(json.dumps(head.to_dict())))
    assert type(again) is type(head)
    np.testing.assert_array_equal(again.score(v), head.score(v))


def test_write_and_read_a_head_file(tmp_path, heads, rng):
    path = tmp_path / "head.json"
    write_head(heads[3], path)
    v = np.abs(rng.normal(size=(3, D)))
    np.testing.assert_array_equal(read_head(path).score(v), heads[3].score(v))


def test_unknown_kind_suggests_the_nearest(heads):
    d = heads[0].to_dict() | {"kind": "label-free"}
    with pytest.raises(ManifestError, match="Did you mean 'label_free'"):
        load_head(d)


def test_other_version_and_missing_arrays_are_rejected(heads):
    with pytest.raises(ManifestError, match="Version for head"):
        load_head(heads[0].to_dict() | {"version": 99})
    d = heads[3].to_dict()
    del d["coef"]
    with pytest.raises(ManifestError, match="'coef'"):
        load_head(d)
    with pytest.raises(ManifestError, match="Projection"):
        load_head(heads[3].to_dict() | {"coef": [1.0, 2.0]})


def test_unreadable_head_file_names_the_file(tmp_path):
    bad = tmp_path / "head.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="head.json' cannot be read"):
        read_head(bad)


def test_head_file_reads_are_bounded(tmp_path):
    import os

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # would block a plain open() until a writer came
    with pytest.raises(ManifestError, match=r"fifo.json' cannot be read: not a regular file "
                                            r"\(a named pipe\)"):
        read_head(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ManifestError, match=r"deep.json' cannot be read: maximum recursion"):
        read_head(deep)


def test_features_of_wrong_size_or_non_finite_are_rejected(heads):
    with pytest.raises(ShapeError, match=rf"expected \(B, {D}\)"):
        heads[0].score(np.zeros((2, D + 1)))
    v = np.zeros((1, D))
    v[0, 2] = np.nan
    with pytest.raises(ShapeError, match="NaN or inf"):
        heads[0].score(v)


def test_score_from_stats_is_the_runtime_score_of_the_graph_outputs(tiny_bundle, rng):
    """The Triton models and the export check score graph outputs with ``score_from_stats``:
    the same numbers as the runtime's ``Scorer`` on the same pair."""
    from cdiqa.heads import score_from_stats
    from cdiqa.runtime import Scorer, SessionOptions
    from cdiqa.runtime.preprocess import feed

    ref = rng.random((64, 72, 3), np.float32)
    dist = np.clip(ref + 0.1 * rng.standard_normal(ref.shape, np.float32), 0, 1)
    with Scorer.load(tiny_bundle, "onnxruntime", options=SessionOptions(threads=1)) as s:
        stats = s.stats(feed([ref, ref], [dist, ref]))
        got = score_from_stats(s.head, *stats)
        assert got.tolist() == s.score_batch([ref, ref], [dist, ref]).tolist()
    assert got[1] == 1.0
