"""Domain degradations: registry, contract, determinism, severity order, physical sense."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa.errors import ConfigError
from cdiqa.model.distortions import (
    DOMAIN_DEGRADATIONS,
    DOMAIN_TYPES,
    KADID_TYPES,
    LEVELS,
    degradations_for,
    distort,
    distortion_type,
)

NAMES = [t.name for t in DOMAIN_TYPES]


def _image(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.5 + 0.4 * np.sin(12 * x * y)], axis=2)
    img[h // 4: h // 2, w // 4: w // 2] = [0.9, 0.3, 0.1]
    img[h // 2:, 3 * w // 4:] = [0.05, 0.05, 0.1]
    return img.astype(np.float32)


IMG = _image()
GRAY = np.repeat(IMG.mean(axis=2, keepdims=True), 3, axis=2)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def test_domains_and_their_names():
    assert set(DOMAIN_DEGRADATIONS) == {"natural", "underwater", "medical", "screen", "neutron"}
    assert DOMAIN_DEGRADATIONS["natural"] == tuple(t.name for t in KADID_TYPES)
    for names in DOMAIN_DEGRADATIONS.values():
        for name in names:
            assert distortion_type(name).name == name
    assert degradations_for("neutron") == ("poisson_gaussian", "white_spots", "GBLUR")


def test_unknown_domain_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"Domain for name 'underwter'.*natural, underwater, "
                                          r"medical, screen, neutron.*Did you mean 'underwater'"):
        degradations_for("underwter")


@pytest.mark.parametrize("name", NAMES)
def test_every_level_keeps_shape_dtype_and_range(name):
    for level in LEVELS:
        out = distort(IMG, name, level, seed=2)
        assert out.shape == IMG.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_determinism_and_seed_dependence(name):
    a, b = distort(IMG, name, 4, seed=11), distort(IMG, name, 4, seed=11)
    assert a.tobytes() == b.tobytes()
    other = distort(IMG, name, 4, seed=12).tobytes() != a.tobytes()
    assert other == distortion_type(name).random


@pytest.mark.parametrize("name", NAMES)
def test_severity_grows_with_level(name):
    mse = [_mse(distort(IMG, name, lv, seed=3), IMG) for lv in LEVELS]
    assert all(lo < hi for lo, hi in zip(mse, mse[1:])), mse


@pytest.mark.parametrize("name", ["poisson_gaussian", "white_spots"])
def test_radiography_noise_keeps_gray_images_gray(name):
    out = distort(GRAY, name, 5, seed=0)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_poisson_gaussian_noise_grows_with_signal():
    flat_dark = np.full((96, 128, 3), 0.1, np.float32)
    flat_bright = np.full((96, 128, 3), 0.8, np.float32)
    sd_dark = distort(flat_dark, "poisson_gaussian", 4, seed=0).std()
    sd_bright = distort(flat_bright, "poisson_gaussian", 4, seed=0).std()
    assert sd_bright > 2 * sd_dark


def test_white_spots_only_brighten():
    out = distort(GRAY, "white_spots", 5, seed=0)
    assert np.all(out >= GRAY - 1e-7) and out.max() > GRAY.max()


def test_color_cast_removes_red_first():
    out = distort(IMG, "color_cast", 3, seed=0).mean(axis=(0, 1)) / IMG.mean(axis=(0, 1))
    assert out[0] < out[1] <= out[2] + 1e-6


def test_haze_lifts_blacks_towards_blue_green_veil():
    out = distort(IMG, "haze", 4, seed=0)
    dark = IMG[IMG.shape[0] // 2:, 3 * IMG.shape[1] // 4:]
    hazy = out[IMG.shape[0] // 2:, 3 * IMG.shape[1] // 4:]
    assert hazy.mean() > dark.mean()
    assert hazy[..., 2].mean() > hazy[..., 0].mean()


def test_low_contrast_keeps_the_mean_and_shrinks_the_spread():
    out = distort(IMG, "low_contrast", 5, seed=0)
    assert abs(float(out.mean()) - float(IMG.mean())) < 1e-3
    assert out.std() < 0.5 * IMG.std()


def test_ringing_overshoots_at_edges_and_keeps_flat_blocks():
    step = np.full((64, 64, 3), 0.2, np.float32)
    step[:, 29:] = 0.8  # an edge inside an 8 x 8 block
    out = distort(step, "ringing", 3, seed=0)
    assert out.max() > 0.8 + 0.02 and out.min() < 0.2 - 0.02
    flat = np.full((64, 64, 3), 0.4, np.float32)
    assert np.allclose(distort(flat, "ringing", 5, seed=0), flat, atol=1e-6)


def test_text_blur_lowers_gradient_energy():
    stripes = np.zeros((64, 96, 3), np.float32)
    stripes[:, ::4] = 1.0
    energy = [np.abs(np.diff(distort(stripes, "text_blur", lv, seed=0), axis=1)).mean()
              for lv in LEVELS]
    assert all(a > b for a, b in zip(energy, energy[1:]))
