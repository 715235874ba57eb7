"""Degradations of imaging domains other than natural photographs, five levels each.

Each is a ``DistortionType`` that ``distort`` applies like a KADID type (same signature, same
seeding, level 1 mildest). None of them has human scores: their levels are physically or
visually ordered, which is all the annotation-free ordering loss (METHOD.md item 5) needs.
Where a KADID type already is the domain's degradation (Gaussian blur, JPEG), the domain
lists name the KADID type instead of a copy of it.

Grayscale images (R = G = B, as radiographs are loaded) get gray noise and spots, so they
stay grayscale.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from cdiqa.model.distortions import _util as u
from cdiqa.model.distortions._util import DistortionType
from cdiqa.model.distortions.kadid import KADID_TYPES


def _is_gray(img: np.ndarray) -> bool:
    return bool(np.array_equal(img[..., 0], img[..., 1])
                and np.array_equal(img[..., 1], img[..., 2]))


# -- radiography, neutron imaging, medical ----------------------------------------------------

def poisson_gaussian(img, param, rng):
    """Signal-dependent noise: photon (Poisson) noise of gain ``a`` plus Gaussian read noise.

    ``y = a * Poisson(x / a) + N(0, sigma^2)``, so var(y) = a*x + sigma^2 (the Poisson-Gaussian
    model of photon-counting detectors). ``param = (a, sigma)``; 1/a is the photon count of a
    white pixel.
    """
    a, sigma = param
    x = img[..., :1] if _is_gray(img) else img
    y = a * rng.poisson(x / a) + rng.standard_normal(x.shape) * sigma
    return np.broadcast_to(y, img.shape).copy()


def white_spots(img, density, rng):
    """Sparse bright spots, as gamma rays leave on neutron radiographs ("white spots").

    ``density`` is the fraction of pixels hit. Each hit is a small Gaussian blob (sigma 0.4 to
    1.2 px) of amplitude 0.6 to 1.0 added to all channels; the same seed puts the spots of a
    lower level among those of every higher one.
    """
    h, w = img.shape[:2]
    n = max(1, int(round(density * h * w)))
    draws = rng.random((n, 4))
    cy, cx = draws[:, 0] * h, draws[:, 1] * w
    amp, sig = 0.6 + 0.4 * draws[:, 2], 0.4 + 0.8 * draws[:, 3]
    off = np.arange(-3, 4)
    py = np.floor(cy)[:, None, None] + off[None, :, None]
    px = np.floor(cx)[:, None, None] + off[None, None, :]
    blob = amp[:, None, None] * np.exp(-((py + 0.5 - cy[:, None, None]) ** 2
                                         + (px + 0.5 - cx[:, None, None]) ** 2)
                                       / (2 * sig[:, None, None] ** 2))
    keep = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    spots = np.zeros((h, w))
    np.add.at(spots, (np.broadcast_to(py, blob.shape)[keep].astype(int),
                      np.broadcast_to(px, blob.shape)[keep].astype(int)), blob[keep])
    return img + spots[..., None]


# -- underwater -------------------------------------------------------------------------------

#: Attenuation per metre of clear ocean water for R, G, B: red is absorbed first.
_WATER_BETA = np.array([0.40, 0.07, 0.05])
#: Colour of the veiling (backscattered) light: blue-green.
_VEIL = np.array([0.10, 0.45, 0.55])


def color_cast(img, depth, rng):
    """Wavelength-dependent attenuation over ``depth`` metres of water: each channel times
    exp(-beta_c * depth), beta_red >> beta_green > beta_blue, then the exposure rescaled so the
    least attenuated channel keeps its level (as a camera's auto-exposure does)."""
    t = np.exp(-_WATER_BETA * depth)
    return img * (t / t.max())


def _depth_map(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    # A pseudo-depth for the transmission map: far at the top of the frame (the open water
    # behind the subject), near at the bottom, with smooth random variation.
    h, w = shape[:2]
    ramp = np.linspace(2.0, 1.0, h)[:, None] * np.ones((1, w))
    field = u.gauss_filter(rng.standard_normal((h, w)), max(h, w) / 8)
    field = field / max(float(np.abs(field).max()), 1e-12) * 0.25
    return ramp + field


def haze(img, strength, rng):
    """Backscatter haze: ``I t + B (1 - t)`` with transmission t = exp(-k beta_c d), veiling
    light B (blue-green), ``k = strength`` and a random smooth depth map d in about 0.75..2.25.
    beta_c weighs red most, so distant parts turn blue-green as well as washed out."""
    d = _depth_map(img.shape, rng)
    beta = _WATER_BETA / _WATER_BETA.mean() * 0.5 + 0.5  # relative: red 1.65, green/blue ~0.7
    t = np.exp(-strength * beta[None, None, :] * d[..., None])
    return img * t + _VEIL * (1 - t)


def low_contrast(img, factor, rng):
    """Global contrast loss: every pixel pulled towards the image mean, ``m + f (x - m)``."""
    m = float(img.mean())
    return m + factor * (img - m)


# -- screen content ---------------------------------------------------------------------------

def _zigzag_mask(n_keep: int, block: int = 8) -> np.ndarray:
    i, j = np.mgrid[0:block, 0:block]
    order = np.lexsort((np.where((i + j) % 2 == 0, j, i).ravel(), (i + j).ravel()))  # zigzag
    mask = np.zeros(block * block, bool)
    mask[order[:n_keep]] = True
    return mask.reshape(block, block)


def ringing(img, n_keep, rng):
    """JPEG-like ringing: each 8 x 8 block's DCT keeps only its first ``n_keep`` coefficients in
    zigzag order (zonal coding). The truncation rings around sharp edges such as text
    strokes (Gibbs) and leaves faint block edges, as strong JPEG compression does."""
    h, w = img.shape[:2]
    ph, pw = -h % 8, -w % 8
    x = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    blocks = x.reshape(x.shape[0] // 8, 8, x.shape[1] // 8, 8, 3)
    coef = fft.dctn(blocks, axes=(1, 3), norm="ortho")
    coef *= _zigzag_mask(int(n_keep))[None, :, None, :, None]
    out = fft.idctn(coef, axes=(1, 3), norm="ortho").reshape(x.shape)
    return out[:h, :w]


def _rescale_kernel(factor: float, sub: int = 64) -> np.ndarray:
    # The point spread of "area-average down by f, linear interpolation back up", averaged over
    # where a stroke falls relative to the coarse grid: a box of width f convolved with a tent
    # of half-width f, integrated over each output pixel.
    r = int(np.ceil(1.5 * factor)) + 1
    x = (np.arange(-r * sub, (r + 1) * sub) + 0.5) / sub - 0.5
    box = (np.abs(x) <= factor / 2).astype(np.float64)
    tent = np.maximum(1 - np.abs(x) / factor, 0)
    psf = np.convolve(box, tent, mode="same")
    k = psf.reshape(2 * r + 1, sub).sum(axis=1)
    k = k + k[::-1]  # cancel the half-sample offset of the even-length discrete convolution
    return k / k.sum()


def text_blur(img, factor, rng):
    """Soft text from rescaling, as in screen sharing and remote desktops: the blur of an
    area-average downscale by ``factor`` and a bilinear upscale back, averaged over sub-pixel
    phase (so the result does not depend on where a glyph falls on the coarse grid)."""
    k = _rescale_kernel(factor)
    out = ndimage.correlate1d(img, k, axis=0, mode="nearest")
    return ndimage.correlate1d(out, k, axis=1, mode="nearest")


def _d(name, fn, params, random=False):
    return DistortionType(None, name, fn, tuple(params), random, None,
                          (fn.__doc__ or "").strip().splitlines()[0])


#: The domain-specific degradations (KADID types are in ``KADID_TYPES``).
DOMAIN_TYPES: tuple[DistortionType, ...] = (
    _d("poisson_gaussian", poisson_gaussian,
       [(1 / 1000, 0.002), (1 / 300, 0.004), (1 / 100, 0.008), (1 / 30, 0.015), (1 / 10, 0.025)],
       random=True),
    _d("white_spots", white_spots, [2e-4, 5e-4, 1e-3, 3e-3, 1e-2], random=True),
    _d("color_cast", color_cast, [0.5, 1, 2, 4, 7]),
    _d("haze", haze, [0.15, 0.3, 0.5, 0.8, 1.2], random=True),
    _d("low_contrast", low_contrast, [0.8, 0.65, 0.5, 0.35, 0.2]),
    _d("ringing", ringing, [36, 24, 15, 10, 6]),
    _d("text_blur", text_blur, [1.25, 1.5, 2.0, 2.5, 3.0]),
)

#: Degradation names per imaging domain; every name is accepted by ``distort``.
DOMAIN_DEGRADATIONS: dict[str, tuple[str, ...]] = {
    "natural": tuple(t.name for t in KADID_TYPES),
    "underwater": ("color_cast", "haze", "low_contrast"),
    "medical": ("poisson_gaussian", "GBLUR", "JPEG", "ringing"),
    "screen": ("ringing", "text_blur"),
    "neutron": ("poisson_gaussian", "white_spots", "GBLUR"),
}


def degradations_for(domain: str) -> tuple[str, ...]:
    """The degradation names suited to ``domain``.

    Raises:
        ConfigError: unknown domain; the message lists the known ones.

    >>> degradations_for("underwater")
    ('color_cast', 'haze', 'low_contrast')
    """
    if domain not in DOMAIN_DEGRADATIONS:
        raise u.unknown_name_error("Domain", domain, DOMAIN_DEGRADATIONS,
                                   "Pick one of the known domains")
    return DOMAIN_DEGRADATIONS[domain]
