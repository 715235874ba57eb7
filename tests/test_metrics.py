"""Training-free metrics and benchmark correlations (cdiqa.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa import metrics
from cdiqa.errors import ConfigError, ShapeError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[100:292, 150:342].astype(np.float64) / 255  # 192 x 192


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 1)


def test_identical_images_get_each_metrics_best_value(photo):
    assert metrics.psnr(photo, photo) == float("inf")
    assert metrics.ssim(photo, photo) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ms_ssim(photo, photo) == pytest.approx(1.0, abs=1e-12)
    assert metrics.gmsd(photo, photo) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", list(metrics.METRICS))
def test_every_metric_orders_increasing_noise(photo, name):
    fn, higher = metrics.METRICS[name]
    values = [fn(photo, _noisy(photo, s)) for s in (0.01, 0.04, 0.12)]
    ordered = values if higher else values[::-1]
    assert ordered[0] > ordered[1] > ordered[2]


def test_psnr_matches_its_definition(photo):
    dist = _noisy(photo, 0.05)
    mse = np.mean((photo - dist) ** 2)
    assert metrics.psnr(photo, dist) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)


def test_ssim_agrees_with_scikit_image_gaussian_ssim(photo):
    """Same definition as skimage's Gaussian-weighted SSIM on luma (no down-sampling < 384 px)."""
    from skimage.metrics import structural_similarity

    dist = _noisy(photo, 0.05)
    ref = structural_similarity(metrics.luma(photo), metrics.luma(dist), data_range=255,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(photo, dist) == pytest.approx(ref, abs=1e-3)


def test_gmsd_barely_sees_a_brightness_shift_that_psnr_rates_like_noise(photo):
    """Gradient similarity ignores a uniform shift (up to the zero-padded border)."""
    base = photo * 0.8 + 0.1
    shifted = base + 0.05
    noisy = np.clip(base + np.random.default_rng(0).normal(0, 0.05, base.shape), 0, 1)
    assert abs(metrics.psnr(base, shifted) - metrics.psnr(base, noisy)) < 1.0
    assert metrics.gmsd(base, shifted) < metrics.gmsd(base, noisy) / 5


def test_ms_ssim_needs_176_pixels():
    small = np.zeros((128, 128, 3))
    with pytest.raises(ShapeError, match="at least 176x176"):
        metrics.ms_ssim(small, small)


def test_metrics_reject_pairs_of_different_size(photo):
    with pytest.raises(ShapeError, match="same size"):
        metrics.psnr(photo, photo[:-1])


def test_rank_correlations_of_perfect_and_reversed_orders():
    x = np.arange(10.0)
    y = x ** 3
    assert metrics.srcc(x, y) == pytest.approx(1.0)
    assert metrics.krcc(x, y) == pytest.approx(1.0)
    assert metrics.srcc(-x, y) == pytest.approx(-1.0)


def test_plcc_after_logistic_fit_linearizes_a_sigmoid_relation():
    x = np.linspace(-3, 3, 40)
    y = metrics.logistic4(x, 5.0, 1.0, 0.3, 0.7)
    assert np.corrcoef(x, y)[0, 1] < 0.99  # the raw relation is not linear
    assert metrics.plcc(x, y) == pytest.approx(1.0, abs=1e-6)
    assert metrics.plcc(-x, y) == pytest.approx(-1.0, abs=1e-6)


def test_correlations_reject_mismatched_or_invalid_input():
    with pytest.raises(ConfigError, match="one prediction per target"):
        metrics.correlations([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="NaN or inf"):
        metrics.correlations([1, 2, np.nan], [1, 2, 3])
