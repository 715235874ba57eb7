"""The KADID-13 development benchmark on a small configuration (cdiqa.model.evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdiqa.model import evaluate as ev  # noqa: E402
from cdiqa.model.network import CDIQA, ModelConfig  # noqa: E402

SMALL = ev.EvalConfig(tile=192, max_tiles=1, few_shot_k=(10,), few_shot_draws=2)


@pytest.fixture(scope="module")
def bench():
    return ev.prepare(SMALL)


@pytest.fixture(scope="module")
def report(bench):
    torch.manual_seed(0)
    model = CDIQA(ModelConfig(channels=(8, 8, 8, 8), stem_channels=8))
    return ev.evaluate(model, SMALL, bench=bench)


def test_pairs_cover_13_types_by_5_levels_with_their_marginal_targets(bench):
    evals = bench.evals
    assert len(evals) == len(evals.refs) * 13 * 5
    marg = ev.read_marginals()
    for i in (0, 17, len(evals) - 1):
        assert evals.mos[i] == marg[(evals.kinds[i], int(evals.levels[i]))]
    assert not set(evals.ref_names) & set(bench.fits.ref_names)


def test_report_has_every_head_and_metric_with_valid_correlations(report):
    names = list(report.rows)
    assert any(n.startswith("label-free") and "default" in n for n in names)
    assert any(n.startswith("few-shot, k=10") for n in names)
    assert any(n.startswith("supervised") for n in names)
    assert {"PSNR", "SSIM", "MS-SSIM", "GMSD"} <= set(names)
    for r in report.rows.values():
        for key in ("SRCC", "KRCC", "PLCC"):
            assert -1 <= r[key] <= 1
        assert 0 <= r["monotone"] <= 1
    # the training-free metrics order the dev set's levels almost always
    assert report.rows["MS-SSIM"]["monotone"] >= 0.9
    table = report.to_markdown()
    assert all(f"| {n} |" in table for n in names)


def test_monotone_fraction_counts_sequences_that_never_rise(bench):
    evals = bench.evals
    from cdiqa.model.distortions import distortion_type

    # a score that is exactly the severity order: 1 for level 1 ... 0 for level 5, and
    # distance from the identity level for Mean_Shift
    good = np.array([1 - abs(lv - (distortion_type(k).identity_level or 0)) / 5
                     if distortion_type(k).identity_level else 1 - lv / 5
                     for k, lv in zip(evals.kinds, evals.levels)])
    assert ev.monotone_fraction(evals, good) == 1.0
    assert ev.monotone_fraction(evals, -good) < 0.2
