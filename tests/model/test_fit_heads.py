"""Fitting quality heads (cdiqa.model.fit_heads) on features with a known latent severity."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa import metrics
from cdiqa.errors import ConfigError
from cdiqa.heads import load_head
from cdiqa.model import fit_heads as fit

D = 24


def _features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """v >= 0 growing with a latent severity s in (0, 1); mos = 5 - 4 s (1..5 scale)."""
    rng = np.random.default_rng(seed)
    pattern = np.random.default_rng(99).uniform(0.2, 2.0, D)  # shared by train and test
    s = rng.uniform(0.02, 1.0, n)
    v = (s[:, None] ** 2) * pattern * rng.lognormal(0, 0.15, (n, D))
    return v, 5 - 4 * s


@pytest.fixture(scope="module")
def train_set():
    return _features(300, seed=1)


@pytest.fixture(scope="module")
def test_set():
    return _features(200, seed=2)


@pytest.mark.parametrize("method", ["pca", "energy", "whitened"])
def test_label_free_head_orders_held_out_pairs(train_set, test_set, method):
    head = fit.fit_label_free(train_set[0], method=method)
    v, mos = test_set
    q = head.score(v)
    assert metrics.srcc(q, mos) > 0.9
    assert head.score(np.zeros((1, D)))[0] == 1.0
    # tau puts the median fitting pair at 0.5
    assert np.median(head.score(train_set[0])) == pytest.approx(0.5, abs=0.02)


def test_label_free_pca_sign_makes_distorted_pairs_worse_than_identical(train_set):
    head = fit.fit_label_free(train_set[0], method="pca")
    assert np.mean(head.score(train_set[0])) < 1.0
    assert np.mean(head.severity(train_set[0])) > 0


@pytest.mark.parametrize("k", [10, 50])
def test_few_shot_head_learns_from_k_labels(train_set, test_set, k):
    v_all, mos_all = train_set
    pick = np.random.default_rng(k).choice(len(v_all), k, replace=False)
    head = fit.fit_few_shot(v_all, v_all[pick], mos_all[pick])
    v, mos = test_set
    q = head.score(v)
    assert metrics.srcc(q, mos) > 0.9
    assert head.score(np.zeros((1, D)))[0] == 1.0
    # it estimates the rescaled opinion score (mos - 1) / 4, not just its order
    assert np.median(np.abs(q - (mos - 1) / 4)) < 0.15


def test_few_shot_ranking_downweights_a_block_the_labels_contradict(test_set):
    """Two blocks of features: the first tracks the severity, the second is noise that the
    label-free energy weighs alike. 50 labels teach the few-shot head to trust the first;
    with an overwhelming prior it stays the label-free head."""
    rng = np.random.default_rng(5)
    n = 400
    s = rng.uniform(0.02, 1.0, n)
    v = np.concatenate([(s[:, None] ** 2) * rng.lognormal(0, 0.1, (n, D // 2)),
                        rng.lognormal(-2, 1.0, (n, D // 2))], axis=1)
    mos = 5 - 4 * s
    lab = rng.choice(n // 2, 50, replace=False)
    held = np.arange(n // 2, n)
    free = fit.fit_label_free(v[: n // 2], pooling="both")
    w = fit.energy_weights(D, None, "both")
    few = fit.fit_few_shot(v[: n // 2], v[lab], mos[lab], weights=w)
    stiff = fit.fit_few_shot(v[: n // 2], v[lab], mos[lab], weights=w, prior=1e6)
    assert few.form == "energy" and few.score(np.zeros((1, D)))[0] == 1.0
    assert few.weights[: D // 2].sum() > 2 * few.weights[D // 2:].sum()
    assert (metrics.srcc(few.score(v[held]), mos[held])
            > metrics.srcc(free.score(v[held]), mos[held]) + 0.05)
    assert np.allclose(stiff.weights, w / w.sum(), rtol=1e-3)  # the label-free weights
    back = load_head(few.to_dict())
    np.testing.assert_array_equal(back.score(v[held]), few.score(v[held]))


def test_supervised_head_fits_and_generalizes(train_set, test_set):
    head = fit.fit_supervised(*train_set, steps=300)
    v, mos = test_set
    q = head.score(v)
    assert metrics.srcc(q, mos) > 0.9
    assert np.median(np.abs(q - (mos - 1) / 4)) < 0.15
    assert head.score(np.zeros((1, D)))[0] == 1.0
    again = load_head(head.to_dict())
    np.testing.assert_array_equal(again.score(v), q)


def test_supervised_fit_is_deterministic_for_a_seed(train_set):
    a = fit.fit_supervised(*train_set, steps=20, seed=3)
    b = fit.fit_supervised(*train_set, steps=20, seed=3)
    np.testing.assert_array_equal(a.w1, b.w1)


def test_severity_target_is_zero_for_the_best_score_and_bounded():
    t = fit.severity_target(np.array([5.0, 3.0, 1.0, 0.0]), (1.0, 5.0))
    assert t[0] == 0.0 and 0 < t[1] < t[2] == t[3] == -np.log(fit.Q_FLOOR)


def test_fitting_rejects_too_few_pairs_and_mismatched_labels(train_set):
    v, mos = train_set
    with pytest.raises(ConfigError, match="at least two pairs"):
        fit.fit_label_free(v[:1])
    with pytest.raises(ConfigError, match="one opinion score per labelled pair"):
        fit.fit_few_shot(v, v[:10], mos[:9])
    with pytest.raises(ConfigError, match="label-free, few-shot or supervised"):
        fit.kind_name("fully-supervised")


def test_a_feature_the_fitting_pairs_leave_at_rounding_noise_gets_scale_one():
    """Chroma features of grayscale images are ~1e-12: dividing them by their own mean would
    weigh float noise like a real feature."""
    from cdiqa.model.fit_heads import UNUSED_FEATURE, feature_scale

    rng = np.random.default_rng(0)
    v = np.column_stack([rng.uniform(0.01, 0.1, 50), rng.uniform(0, 1e-12, 50), np.zeros(50)])
    s = feature_scale(v)
    assert s[0] == pytest.approx(v[:, 0].mean()) and s[1] == s[2] == 1.0
    assert feature_scale(np.full((3, 1), 10 * UNUSED_FEATURE))[0] == 10 * UNUSED_FEATURE
