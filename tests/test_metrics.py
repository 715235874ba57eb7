"""Training-free metrics and benchmark correlations (cdiqa.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa import metrics
from cdiqa.errors import ConfigError, ShapeError
from cdiqa.tolerances import tolerance


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
    assert metrics.haarpsi(photo, photo) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mdsi(photo, photo) == 0.0
    assert metrics.vsi(photo, photo) == pytest.approx(1.0, abs=1e-12)


def test_colour_metrics_of_two_black_images_are_their_best_values():
    black = np.zeros((32, 32, 3))
    assert metrics.haarpsi(black, black) == 1.0
    assert metrics.mdsi(black, black) == 0.0
    assert metrics.vsi(black, black) == 1.0


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


@pytest.mark.parametrize("fn, need", [(metrics.haarpsi, 16), (metrics.mdsi, 3),
                                      (metrics.vsi, 3)])
def test_colour_metrics_name_their_minimum_size(fn, need):
    small = np.zeros((need - 1, 40, 3))
    with pytest.raises(ShapeError, match=f"at least {need}x{need}"):
        fn(small, small)


def test_pair_scores_has_every_metric_higher_is_better(photo):
    dist = _noisy(photo, 0.05)
    out = metrics.pair_scores([(photo, dist)])
    assert set(out) == set(metrics.METRICS)
    assert out["MDSI"][0] == -metrics.mdsi(photo, dist)
    assert out["HaarPSI"][0] == metrics.haarpsi(photo, dist)
    assert out["VSI"][0] == metrics.vsi(photo, dist)


# ---- HaarPSI, MDSI, VSI against the reference implementation -------------------------------

_DISTORTIONS = ("noise", "blur", "colour", "blocks")


def _reference_images() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": data.astronaut()[64:320, 160:416].astype(np.float64) / 255,  # 256 x 256
        "coffee": data.coffee()[:399, :517].astype(np.float64) / 255,  # f = 2, odd sides
        "chelsea": data.chelsea().astype(np.float64) / 255,  # 300 x 451: one odd side
    }


def _distort(img: np.ndarray, kind: str) -> np.ndarray:
    from scipy.fft import dctn, idctn
    from scipy.ndimage import gaussian_filter

    if kind == "noise":
        return np.clip(img + np.random.default_rng(0).normal(0, 0.05, img.shape), 0, 1)
    if kind == "blur":
        return gaussian_filter(img, sigma=(1.5, 1.5, 0))
    if kind == "colour":
        return np.clip(img * (1.1, 0.95, 0.85) + (0.0, 0.03, 0.05), 0, 1)
    if kind == "blocks":  # JPEG-like: 8x8 DCT coefficients quantised with step 0.1
        h, w = (img.shape[0] // 8) * 8, (img.shape[1] // 8) * 8
        out = img.copy()
        c = dctn(img[:h, :w].reshape(h // 8, 8, w // 8, 8, 3), axes=(1, 3), norm="ortho")
        blocks = idctn(np.round(c / 0.1) * 0.1, axes=(1, 3), norm="ortho")
        out[:h, :w] = blocks.reshape(h, w, 3)
        return np.clip(out, 0, 1)
    raise ValueError(kind)


# (image, distortion) -> (HaarPSI, MDSI, VSI) of piq 0.8.0 (torch 2.13.0+cpu) on these inputs
# as float64 (1, 3, H, W) tensors, default parameters, data_range=1:
# piq.haarpsi(x=ref, y=dist), piq.mdsi(x=ref, y=dist), piq.vsi(x=ref, y=dist).
_PIQ = {
    ("astronaut", "noise"): (0.8762783279331512, 0.40452499235003464, 0.9542566876394271),
    ("astronaut", "blur"): (0.8219299563564404, 0.3496146960845801, 0.9712436885467645),
    ("astronaut", "colour"): (0.8696057704830211, 0.28764012759010804, 0.9914694072779059),
    ("astronaut", "blocks"): (0.9556931928100598, 0.2577840090554085, 0.9928318306073948),
    ("coffee", "noise"): (0.8755919630682201, 0.2860674878092199, 0.9878619185374374),
    ("coffee", "blur"): (0.8294466154982993, 0.29446576164763466, 0.9867561305606635),
    ("coffee", "colour"): (0.9430002805882934, 0.19284480811833404, 0.9961821855200855),
    ("coffee", "blocks"): (0.9564868250086969, 0.19839388203083855, 0.9978121616883939),
    ("chelsea", "noise"): (0.8600931979288269, 0.39248537952688406, 0.9544045417358692),
    ("chelsea", "blur"): (0.8966596622636835, 0.34020606312054724, 0.9710065887228362),
    ("chelsea", "colour"): (0.957761797484319, 0.22211421071119963, 0.9953198872496326),
    ("chelsea", "blocks"): (0.9511547685061916, 0.26832724241490175, 0.9909934412059864),
}


@pytest.fixture(scope="module")
def reference_pairs() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    return {(name, kind): (img, _distort(img, kind))
            for name, img in _reference_images().items() for kind in _DISTORTIONS}


@pytest.mark.parametrize("column, name", [(0, "HaarPSI"), (1, "MDSI"), (2, "VSI")],
                         ids=["HaarPSI", "MDSI", "VSI"])
def test_colour_metric_matches_piq_on_fixed_inputs(reference_pairs, column, name):
    fn = metrics.METRICS[name][0]
    atol = tolerance("metric_reference", "fp64").atol
    assert set(reference_pairs) == set(_PIQ)
    for key, (ref, dist) in reference_pairs.items():
        assert fn(ref, dist) == pytest.approx(_PIQ[key][column], abs=atol), key


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
