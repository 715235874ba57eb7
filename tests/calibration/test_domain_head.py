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


def test_screen_content_is_scored_at_input_scale_2():
    """Text strokes are gone at the pyramid's /2: the choice upsamples screen content (the
    cross-validated SRCC differs by ~0.1, far beyond any machine's rounding)."""
    pytest.importorskip("torch")
    from cdiqa.calibration.bundle import domain_model_and_head, head_references
    from cdiqa.calibration.domains import domain_samples
    from cdiqa.model.distortions import degradations_for
    from cdiqa.model.scoring import resolve_head, resolve_model

    kinds = degradations_for("screen")
    refs = head_references(domain_samples("screen").references, kinds)
    model, choice, notes = domain_model_and_head(resolve_model(None), refs, kinds,
                                                 base=resolve_head(None), seed=1)
    assert model.cfg.input_scale == 2 and notes[1].startswith("input scale 2")
    assert choice.head.dim == model.feature_dim
