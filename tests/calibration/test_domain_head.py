"""The domain head of ``calibrate``: ranked fit and the cross-validated choice."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa import metrics
from cdiqa.calibration.domain_head import MARGIN, choose_head
from cdiqa.errors import ConfigError
from cdiqa.model import fit_heads as fit

LAYOUT = {"channels": (2, 2), "weights": None}


def _ladder(groups: int = 4, seed: int = 0):
    """Features (mean 4, std 4) of a two-kind ladder: kind A moves std feature 4, kind B
    features 4 and 6 as much each, so the plain energy reads B as the worse at equal level."""
    rng = np.random.default_rng(seed)
    rows, sev, grp = [], [], []
    for g in range(groups):
        content = rng.uniform(0.8, 1.2)
        for kind in "AB":
            for level in range(1, 6):
                v = np.full(8, 1e-3) * rng.uniform(0.5, 1.5, 8)
                v[4] = content * level * rng.uniform(0.95, 1.05)
                if kind == "B":
                    v[6] = content * level * rng.uniform(0.95, 1.05)
                rows.append(v)
                sev.append(level)
                grp.append(f"img{g}")
    return np.array(rows), np.array(sev, float), np.array(grp)


def test_ranked_head_aligns_kinds_that_the_plain_energy_does_not():
    v, sev, _ = _ladder()
    plain = fit.fit_label_free(v, **LAYOUT)
    ranked = fit.fit_ranked(v, sev, prior=0.003, **LAYOUT)
    assert metrics.srcc(ranked.score(v), -sev) > metrics.srcc(plain.score(v), -sev) + 0.05
    assert ranked.kind == "label_free" and ranked.score(np.zeros((1, 8)))[0] == 1.0
    assert np.all(ranked.weights[:4] == 0)  # the label-free zeros (mean features) stay 0


def _sign_ladder(groups: int = 4, seed: int = 0):
    """Two kinds whose level shows as a gain of feature 0 (A, noise-like) or a loss that
    raises feature 0 half as much and feature 1 as much (B, blur-like): equal levels are
    equally bad only for a head that counts feature 0 against feature 1."""
    rng = np.random.default_rng(seed)
    rows, sev, grp, kinds = [], [], [], []
    for g in range(groups):
        content = rng.uniform(0.8, 1.2)
        for kind in "AB":
            for level in range(1, 6):
                v = np.full(4, 1e-3) * rng.uniform(0.5, 1.5, 4)
                a = content * level * rng.uniform(0.9, 1.1)
                v[0], v[1] = (a, 0.1 * a) if kind == "A" else (1.5 * a, 2.0 * a)
                rows.append(v)
                sev.append(level)
                grp.append(f"img{g}")
                kinds.append(kind)
    return np.array(rows), np.array(sev, float), np.array(grp), np.array(kinds)


def test_signed_head_counts_one_feature_against_another():
    v, sev, _, _ = _sign_ladder()
    layout = {"channels": (1, 1), "weights": None}
    ranked = fit.fit_ranked(v, sev, prior=0.003, **layout)
    signed = fit.fit_signed(v, sev, prior=0.03)
    assert metrics.srcc(signed.score(v), -sev) > metrics.srcc(ranked.score(v), -sev) + 0.05
    assert signed.method == "linear" and signed.weights[1] < 0 < signed.weights[0]
    assert signed.score(np.zeros((1, 4)))[0] == 1.0


def test_signed_head_leaves_a_feature_that_never_varies_at_zero():
    v, sev, _, _ = _sign_ladder()
    v[:, 3] = 0.0
    assert fit.fit_signed(v, sev, prior=0.03).weights[3] == 0.0


def test_signed_head_round_trips_through_its_json(tmp_path):
    from cdiqa.heads import read_head, write_head

    v, sev, _, _ = _sign_ladder()
    head = fit.fit_signed(v, sev, prior=0.1)
    write_head(head, tmp_path / "head.json")
    back = read_head(tmp_path / "head.json")
    assert back.method == "linear" and np.array_equal(back.score(v), head.score(v))


def test_choice_takes_the_signed_head_where_only_it_aligns_the_kinds():
    v, sev, groups, kinds = _sign_ladder()
    choice = choose_head(v, sev, groups, base=None, layout={"channels": (1, 1), "weights": None},
                         kinds=kinds)
    assert choice.name.startswith("signed")
    assert set(choice.within) == set(choice.srcc)
    assert choice.best == pytest.approx(max(choice.score.values()))
    assert "/" in choice.describe()


def test_choice_weighs_the_order_within_each_kind():
    """A candidate whose pooled lead comes from scrambling each kind's own order loses to
    one that keeps it: the choice compares the mean of pooled and within-kind SRCC."""
    from cdiqa.calibration.domain_head import HeadChoice

    c = HeadChoice(None, "", {"a": 0.80, "b": 0.83}, {"a": 0.95, "b": 0.85})
    assert c.score == pytest.approx({"a": 0.875, "b": 0.84})
    assert c.best == pytest.approx(0.875)


def test_ranked_head_checks_the_severity_shape():
    v, sev, _ = _ladder()
    with pytest.raises(ConfigError, match="severity"):
        fit.fit_ranked(v, sev[:-1], prior=0.03, **LAYOUT)


def test_choice_prefers_the_ranked_head_where_it_ranks_unseen_images_better():
    v, sev, groups = _ladder()
    choice = choose_head(v, sev, groups, base=None, layout=LAYOUT)
    assert choice.name.startswith("ranked")
    assert choice.srcc[choice.name] > choice.srcc["label-free"] + MARGIN
    assert "domain head: ranked" in choice.describe()


def test_choice_keeps_the_bundle_head_unless_a_fit_beats_it_by_the_margin():
    v, sev, groups = _ladder()
    good = fit.fit_ranked(v, sev, prior=0.003, **LAYOUT)  # as good as any fit can be
    choice = choose_head(v, sev, groups, base=good, layout=LAYOUT)
    assert choice.name == "bundle" and choice.head is good


def test_one_source_image_keeps_the_label_free_refit():
    v, sev, _ = _ladder(groups=1)
    choice = choose_head(v, sev, np.array(["only"] * len(v)), base=None, layout=LAYOUT)
    assert choice.name == "label-free" and choice.srcc == {}


def test_screen_content_ranks_far_better_at_input_scale_2():
    """Text strokes are gone at the pyramid's /2: upsampled, the ranked head's cross-validated
    SRCC is ~0.1 higher (far beyond any machine's rounding), and the choice takes the scale
    whose best candidate is best."""
    pytest.importorskip("torch")
    from cdiqa.calibration.bundle import (_head_choice, domain_model_and_head, head_ladder,
                                          head_references)
    from cdiqa.calibration.domains import domain_samples
    from cdiqa.model.distortions import degradations_for
    from cdiqa.model.network import with_input_scale
    from cdiqa.model.scoring import resolve_head, resolve_model

    kinds = degradations_for("screen")
    refs = head_references(domain_samples("screen").references, kinds)
    model, natural = resolve_model(None), resolve_head(None)
    lad = head_ladder(refs, kinds, 1)
    groups = np.array([refs[i].group for i in lad.ref_index])
    at = {s: _head_choice(model if s == 1 else with_input_scale(model, s), lad, groups,
                          base=natural) for s in (1, 2)}
    assert at[2].srcc["ranked 0.003"] > at[1].srcc["ranked 0.003"] + 0.1
    chosen, choice, notes = domain_model_and_head(model, refs, kinds, base=natural, seed=1)
    best = max(at, key=lambda s: at[s].best)
    assert chosen.cfg.input_scale == best and notes[1].startswith(f"input scale {best}")
    assert choice.head.dim == chosen.feature_dim
