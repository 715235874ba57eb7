"""The development benchmark on a small set of references (cdiqa.model.evaluate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from cdiqa.model import evaluate as ev  # noqa: E402
from cdiqa.model.network import CDIQA, ModelConfig  # noqa: E402


@pytest.fixture(scope="module")
def refs_dir(tmp_path_factory):
    """A tiny development set: 2 test references and 1 tune reference at 256 x 192."""
    from skimage import data

    from cdiqa.images import save_image
    from cdiqa.model.devset import SOURCES_FILE, crop_resize

    folder = tmp_path_factory.mktemp("devset")
    images = {"astronaut": ("test", data.astronaut()), "coffee": ("test", data.coffee()),
              "rocket": ("tune", data.rocket())}
    records = []
    for name, (split, img) in images.items():
        save_image(folder / f"{name}.png", crop_resize(img / 255.0, (256, 192)))
        records.append({"name": name, "split": split, "file": f"{name}.png"})
    (folder / SOURCES_FILE).write_text(json.dumps(records))
    return folder


@pytest.fixture(scope="module")
def small(refs_dir):
    return ev.EvalConfig(refs=str(refs_dir), few_shot_k=(10,), few_shot_draws=2, bootstrap=50,
                          supervised_steps=200)


@pytest.fixture(scope="module")
def bench(small):
    return ev.prepare(small)


@pytest.fixture(scope="module")
def report(bench, small):
    torch.manual_seed(0)
    model = CDIQA(ModelConfig(channels=(8, 8, 8, 8), stem_channels=8))
    return ev.evaluate(model, small, bench=bench)


def test_pairs_cover_13_types_by_5_levels_with_their_marginal_targets(bench):
    test = bench.test
    assert len(test) == len(test.refs) * 13 * 5 and test.refs[0].shape == (192, 256, 3)
    marg = ev.read_marginals()
    for i in (0, 17, len(test) - 1):
        assert test.mos[i] == marg[(test.kinds[i], int(test.levels[i]))]
    assert set(test.names) == {"astronaut", "coffee"}
    assert not set(test.names) & set(bench.tune.names)


def test_report_has_every_head_and_metric_with_valid_correlations(report):
    names = list(report.rows)
    assert any(n.startswith("label-free") and "default" in n for n in names)
    assert any(n.startswith("few-shot, k=10") for n in names)
    assert any(n.startswith("supervised") for n in names)
    assert {"PSNR", "SSIM", "MS-SSIM", "GMSD", "HaarPSI", "MDSI", "VSI"} <= set(names)
    for r in report.rows.values():
        for key in ("SRCC", "KRCC", "PLCC", "folds", "folds_mean"):
            assert -1 <= r[key] <= 1
        assert r["SRCC_lo"] <= r["SRCC_hi"] and 0 <= r["monotone"] <= 1
        assert set(r["categories"]) == {"blur", "colour", "compression", "noise",
                                        "brightness", "spatial"}
    # a metric fits nothing: its leave-category-out SRCC is its plain SRCC
    assert report.rows["GMSD"]["folds"] == report.rows["GMSD"]["SRCC"]
    table = report.to_markdown()
    assert all(f"| {n} |" in table for n in names) and "| method | blur | colour |" in table


def test_bootstrap_resamples_whole_references(bench):
    test = bench.test
    per_ref = len(test) // len(test.refs)
    for rows in ev.bootstrap_rows(test, 20, seed=0):
        assert len(rows) == len(test)
        counts = np.bincount(test.ref_index[rows], minlength=len(test.refs))
        assert set(counts // per_ref * per_ref) == set(counts)  # whole references only
    a, b = ev.bootstrap_rows(test, 5, 0), ev.bootstrap_rows(test, 5, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # seeded


def test_leave_category_out_heads_never_see_the_held_category(bench, small, monkeypatch):
    """Every fold's fit gets tune rows of the other categories only, and every category is
    held out once per fitted head."""
    seen = []
    real = ev.fit.fit_label_free

    def spy(v, **kw):
        seen.append(len(v))
        return real(v, **kw)

    monkeypatch.setattr(ev.fit, "fit_label_free", spy)
    monkeypatch.setattr(ev, "LABEL_FREE_VARIANTS", {"lf": {"method": "energy"}})
    cats = bench.tune.categories
    rng = np.random.default_rng(0)
    v_test, v_tune = rng.random((len(bench.test), 16)), rng.random((len(bench.tune), 16))
    cfg = ev.EvalConfig(refs=small.refs, few_shot_k=(), few_shot_draws=1, supervised_steps=10)
    ev.head_rows(v_test, v_tune, bench, cfg, {"channels": None, "weights": None})
    expected = [len(cats)] + [int(np.sum(cats != c)) for c in dict.fromkeys(bench.test.categories)]
    assert seen[:len(expected)] == expected


def test_monotone_counts_sequences_that_never_rise(bench):
    from cdiqa.model.distortions import distortion_type
    from cdiqa.model.ladder import monotone

    test = bench.test
    # a score that is exactly the severity order: 1 for level 1 ... 0 for level 5, and
    # distance from the identity level for Mean_Shift
    good = np.array([1 - abs(lv - (distortion_type(k).identity_level or 0)) / 5
                     if distortion_type(k).identity_level else 1 - lv / 5
                     for k, lv in zip(test.kinds, test.levels)])
    assert monotone(test, good) == 1.0
    assert monotone(test, -good) < 0.2
