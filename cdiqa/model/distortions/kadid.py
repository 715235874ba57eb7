"""The 25 KADID-10k distortion types at their five published levels (numpy, scipy, Pillow).

Source: Lin, Hosu, Saupe, "KADID-10k: A Large-scale Artificially Distorted IQA Database",
QoMEX 2019, and the MATLAB generator the authors released with it (``imdist_generator.m`` and
one ``im*.m`` file per distortion). The level parameters in ``KADID_TYPES`` are the released
ones. How each function was rebuilt, and where it departs from MATLAB, is said in its
docstring; the project report lists which parts are certain and which are reconstructed.

The released generator wraps every distortion in a min-max stretch,
``D = mapmm(f(mapmm(R)))``. ``_kadid`` keeps that frame but maps the result back onto the
reference's own range, ``D = lo + (hi - lo) * mapmm(f(mapmm(R)))``: identical to KADID for
references that span [0, 1] (KADID's photographs do), and it never stretches a low-contrast
domain reference, so an identity level returns the reference itself.

Two types are not monotone in their level, because KADID's parameters run from one direction
through identity (level 3) to the other: Mean_Shift (brighter, none, darker) and
Contrast_Change (more, none, less contrast). Their ``identity_level`` is 3 and
``DistortionType.severity_pairs`` orders only levels on the same side. KADID's own scores
agree: Mean_Shift's mean opinion score peaks at level 3 (4.60) and falls both ways.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, features
from scipy import ndimage

from cdiqa.errors import BackendUnavailable, ConfigError, describe
from cdiqa.model.distortions import _util as u
from cdiqa.model.distortions._util import DistortionType, mapmm


def kadid_type(name_or_id: str | int) -> DistortionType:
    """Look up a KADID-10k type by its exact name (``"JPEG"``) or id (``10`` or ``"10"``).

    Raises:
        ConfigError: unknown name (with a "did you mean") or an id outside 1..25.

    >>> kadid_type("Motion_Blur").id, kadid_type(10).name
    (3, 'JPEG')
    """
    key = name_or_id
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 1 <= int(key) <= len(KADID_TYPES):
            return KADID_TYPES[int(key) - 1]
        raise ConfigError(describe("KADID type id", "argument", "name_or_id", key, "1..25",
                                     "Use an id from KADID_TYPES"))
    if isinstance(key, str) and key in _BY_NAME:
        return _BY_NAME[key]
    raise u.unknown_name_error("KADID type", name_or_id, _BY_NAME,
                               "Use a name exactly as KADID-10k spells it")


def _kadid(fn):
    """Wrap a MATLAB-style distortion in KADID's min-max frame (see the module docstring)."""
    @functools.wraps(fn)
    def framed(img: np.ndarray, param, rng: np.random.Generator) -> np.ndarray:
        lo, hi = float(img.min()), float(img.max())
        if hi <= lo:  # a flat image: nothing to stretch
            return fn(img, param, rng)
        return lo + (hi - lo) * mapmm(fn((img - lo) / (hi - lo), param, rng))
    return framed


# -- blur -------------------------------------------------------------------------------------

def gblur(img, sigma, rng):
    """1 GBLUR: ``imgaussfilt(I, sigma)``, replicate padding."""
    return u.gauss_filter(img, sigma)


def _disk_kernel(radius: float, sub: int = 25) -> np.ndarray:
    # fspecial('disk') weights each pixel by its area inside the disk; 25 x 25 sub-samples
    # per pixel get within ~1e-3 of MATLAB's analytic areas.
    c = math.ceil(radius - 0.5)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.arange(-c, c + 1)
    ys = (grid[:, None] + offs[None, :]).reshape(-1)
    inside = (ys[:, None] ** 2 + ys[None, :] ** 2) <= radius**2
    area = inside.reshape(len(grid), sub, len(grid), sub).mean(axis=(1, 3))
    return area / area.sum()


def lens_blur(img, radius, rng):
    """2 Lens_Blur: convolution with an antialiased disk, ``fspecial('disk', radius)``."""
    return u.filter2d(img, _disk_kernel(radius))


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    # fspecial('motion'): a 1-pixel-wide line of the given length through the centre; each
    # pixel weighs max(0, 1 - distance to the segment). Length 1 gives the identity.
    half = (max(length, 1) - 1) / 2
    r = math.ceil(half) + 1
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    phi = math.radians(angle_deg % 180)
    ux, uy = math.cos(phi), -math.sin(phi)  # image rows grow downwards
    t = np.clip(x * ux + y * uy, -half, half)
    dist = np.hypot(x - t * ux, y - t * uy)
    k = np.maximum(1 - dist, 0)
    return k / k.sum()


def motion_blur(img, length, rng):
    """3 Motion_Blur: ``fspecial('motion', length, angle)``, angle uniform in 0..180 degrees."""
    angle = int(rng.integers(0, 181))
    return u.filter2d(img, _motion_kernel(length, angle))


# -- colour -----------------------------------------------------------------------------------

def color_diffusion(img, amount, rng):
    """4 Color_Diffusion: a*, b* blurred with sigma = 1.5*amount + 2 and scaled by amount."""
    lab = u.rgb2lab(img)
    lab[..., 1:] = u.gauss_filter(lab[..., 1:], 1.5 * amount + 2) * amount
    return np.clip(u.lab2rgb(lab), 0, 1)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = a.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return a[np.ix_(ys, xs)]


def color_shift(img, amount, rng):
    """5 Color_Shift: the green channel displaced by ``amount`` pixels in a random direction,
    blended in where the image has edges.

    The blend weight is the smoothed gradient magnitude of the gray image, stretched, floored
    at 0.1 and stretched again between its 1st and 99th percentiles (MATLAB ``ps2``).
    """
    gy, gx = np.gradient(u.rgb2gray(img))
    e = mapmm(u.gauss_filter(np.hypot(gx, gy), 4))
    e = np.clip(e, 0.1, 1)
    lo, hi = np.percentile(e, [1, 99])
    e = mapmm(np.clip(e, lo, hi))
    direction = rng.random(2)
    dy, dx = np.round(direction / max(np.linalg.norm(direction), 1e-12) * amount).astype(int)
    out = img.copy()
    out[..., 1] = _shift(img[..., 1], dy, dx) * e + img[..., 1] * (1 - e)
    return out


def color_quantization(img, n_colors, rng):
    """6 Color_Quantization: ``rgb2ind(I, n)``, i.e. an n-colour palette with Floyd-Steinberg
    dithering. Pillow's median cut stands in for MATLAB's minimum-variance palette."""
    im = Image.fromarray(_to_uint8(img))
    palette = im.quantize(colors=int(n_colors), method=Image.Quantize.MEDIANCUT)
    dithered = im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(dithered.convert("RGB"), dtype=np.float64) / 255


def saturation_hsv(img, factor, rng):
    """7 Saturation_Dist._HSV: HSV saturation times ``factor`` (0 = gray, < 0 inverts hue)."""
    hsv = u.rgb2hsv(img)
    hsv[..., 1] *= factor
    return u.hsv2rgb(hsv)


def saturation_lab(img, factor, rng):
    """8 Saturation_Dist._LAB: a* and b* times ``factor``, truncated to the RGB cube."""
    lab = u.rgb2lab(img)
    lab[..., 1:] *= factor
    return np.clip(u.lab2rgb(lab), 0, 1)


# -- compression ------------------------------------------------------------------------------

def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _roundtrip(img: np.ndarray, fmt: str, **options) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format=fmt, **options)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255


@functools.cache
def jpeg2000_available() -> bool:
    """Whether Pillow was built with the OpenJPEG codec (checked once)."""
    return bool(features.check("jpg_2000"))


def jpeg2000(img, ratio, rng):
    """9 JPEG2000: ``imwrite(I, 'jp2', 'CompressionRatio', ratio)`` through Pillow/OpenJPEG.

    Lossy 9/7 wavelet with the irreversible colour transform, one quality layer at the given
    ratio of raw to coded size (OpenJPEG's ``rates`` use the same definition as MATLAB).

    Raises:
        BackendUnavailable: Pillow lacks OpenJPEG. No other codec is substituted.
    """
    if not jpeg2000_available():
        raise BackendUnavailable(describe(
            "Codec", "distortion", "JPEG2000", "Pillow without the OpenJPEG (jpg_2000) codec",
            "PIL.features.check('jpg_2000') to be True",
            "Install a Pillow build with OpenJPEG (the PyPI wheels include it)"))
    # OpenJPEG needs every side >= 2**(resolutions - 1); 6 resolutions is its default.
    n_res = max(1, min(6, int(math.log2(min(img.shape[:2]))) + 1))
    return _roundtrip(img, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
                      irreversible=True, mct=1, num_resolutions=n_res)


def jpeg(img, quality, rng):
    """10 JPEG: baseline JPEG at the given quality (Pillow/libjpeg, 4:2:0 chroma)."""
    return _roundtrip(img, "JPEG", quality=int(quality))


# -- noise ------------------------------------------------------------------------------------

def awgn(img, var, rng):
    """11 AWGN: ``imnoise(I, 'gaussian', 0, var)``: white Gaussian noise, clipped to [0, 1]."""
    return np.clip(img + rng.standard_normal(img.shape) * math.sqrt(var), 0, 1)


def awgn_color(img, var, rng):
    """12 AWGN_Color: white noise added in YCbCr (``rgb2ycbcr``, ``imnoise``, ``ycbcr2rgb``)."""
    ycc = np.clip(u.rgb2ycbcr(img) + rng.standard_normal(img.shape) * math.sqrt(var), 0, 1)
    return np.clip(u.ycbcr2rgb(ycc), 0, 1)


def impulse_noise(img, density, rng):
    """13 Impulse_Noise: ``imnoise(I, 'salt & pepper', d)``, each sample of each channel on its
    own, so impulses are coloured."""
    p = rng.random(img.shape)
    out = img.copy()
    out[p < density / 2] = 0.0
    out[(p >= density / 2) & (p < density)] = 1.0
    return out


def multiplicative_noise(img, var, rng):
    """14 Multiplicative_Noise: ``imnoise(I, 'speckle', var)``: I + n*I with n uniform, zero
    mean, variance ``var``."""
    n = (rng.random(img.shape) - 0.5) * math.sqrt(12 * var)
    return np.clip(img + n * img, 0, 1)


def denoising(img, var, rng):
    """15 Denoising: white noise of variance ``var``, then a denoiser.

    KADID denoises each channel with MATLAB's pretrained DnCNN, whose weights are not
    available here. Non-local means with the true noise level stands in: like DnCNN far
    outside its training range (sigma up to 0.39 here), it leaves smoothed, blotchy images
    whose texture loss grows with the noise.
    """
    noisy = np.clip(img + rng.standard_normal(img.shape) * math.sqrt(var), 0, 1)
    return _nl_means(noisy, math.sqrt(var))


def _nl_means(x: np.ndarray, sigma: float, patch: int = 5, search: int = 5) -> np.ndarray:
    # Pixelwise non-local means (Buades et al.), one shift of the search window at a time:
    # weight = exp(-max(d2 - 2 sigma^2, 0) / h^2), d2 the mean squared difference of the
    # patch x patch neighbourhoods over the three channels, h = 0.8 sigma (the usual choice
    # when 2 sigma^2 is subtracted).
    h2 = (0.8 * sigma) ** 2
    pad = np.pad(x, ((search, search), (search, search), (0, 0)), mode="reflect")
    hh, ww = x.shape[:2]
    acc, norm = np.zeros_like(x), np.zeros(x.shape[:2])
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            moved = pad[search + dy:search + dy + hh, search + dx:search + dx + ww]
            d2 = ndimage.uniform_filter(((x - moved) ** 2).mean(axis=2), patch, mode="reflect")
            wgt = np.exp(-np.maximum(d2 - 2 * sigma**2, 0) / h2)
            acc += wgt[..., None] * moved
            norm += wgt
    return acc / norm[..., None]


# -- brightness and contrast ------------------------------------------------------------------

def curves(x: np.ndarray, ys) -> np.ndarray:
    """A tone curve through (0, 0), the control values ``ys`` and (1, 1), truncated to [0, 1].

    The control points sit at the centres of equal parts of [0, 1] (0.5 for one value, 0.25 and
    0.75 for two), so a control value equal to its position gives the identity, as KADID's
    ``amount = 0`` levels require. The curve is MATLAB's not-a-knot cubic ``spline``, which
    through three or four points is the interpolating polynomial: the parabola through three
    points, the cubic through four.
    """
    ys = np.atleast_1d(np.asarray(ys, dtype=np.float64))
    n = len(ys)
    if n > 2:
        raise ValueError("curves takes one or two control values")
    px = np.concatenate([[0.0], (2 * np.arange(n) + 1) / (2 * n), [1.0]])
    py = np.concatenate([[0.0], ys, [1.0]])
    return np.clip(np.polyval(np.polyfit(px, py, n + 1), x), 0, 1)


def _tone(img: np.ndarray, control: float) -> np.ndarray:
    # imbrighten: the curve applied to RGB and, separately, to L*; the RGB result weighs 2/3.
    lab = u.rgb2lab(img)
    lab[..., 0] = curves(lab[..., 0] / 100, control) * 100
    return (2 * curves(img, control) + np.clip(u.lab2rgb(lab), 0, 1)) / 3


def brighten(img, amount, rng):
    """16 Brighten: tone curve through (0.5, 0.5 + amount/2) on RGB and on L* (2:1 blend)."""
    return _tone(img, 0.5 + amount / 2)


def darken(img, amount, rng):
    """17 Darken: Brighten's curve mirrored, through (0.5, 0.5 - amount/2).

    Reconstructed: ``imdarken.m`` was not at hand; this mirrors ``imbrighten.m``.
    """
    return _tone(img, 0.5 - amount / 2)


def mean_shift(img, amount, rng):
    """18 Mean_Shift: ``amount`` added to every channel, truncated to [0, 1]."""
    return np.clip(img + amount, 0, 1)


def contrast_change(img, amount, rng):
    """25 Contrast_Change: ``curves(I, [0.25 - amount/4, 0.75 + amount/4])``; amount > 0 adds
    contrast, amount < 0 removes it, 0 is the identity."""
    return curves(img, [0.25 - amount / 4, 0.75 + amount / 4])


# -- spatial ----------------------------------------------------------------------------------

def jitter(img, amount, rng):
    """19 Jitter: five rounds of warping every pixel by a Gaussian random shift of standard
    deviation ``amount`` pixels (``imscatter``), bicubic, replicate borders."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = img
    for _ in range(5):
        s = rng.standard_normal((2, h, w)) * amount
        coords = np.stack([yy - s[0], xx - s[1]])
        out = np.stack([ndimage.map_coordinates(out[..., c], coords, order=3, mode="nearest")
                        for c in range(3)], axis=2)
    return out


def non_eccentricity_patch(img, n_patches, rng):
    """20 Non_Eccentricity_Patch: ``n`` times, a 16 x 16 patch is copied to a spot at most 8
    pixels away (patch origins at least 16 pixels from the border)."""
    size, radius = 16, 16
    h, w = img.shape[:2]
    if h < size + 2 * radius or w < size + 2 * radius:
        raise u.min_size_error("Non_Eccentricity_Patch", img.shape, size + 2 * radius)
    out = img.copy()
    draws = rng.random((int(n_patches), 4))
    for a, b, c, d in draws:
        y0 = int(round(a * (h - size - 2 * radius))) + radius
        x0 = int(round(b * (w - size - 2 * radius))) + radius
        y1 = int(round((c - 0.5) * radius)) + y0
        x1 = int(round((d - 0.5) * radius)) + x0
        out[y1:y1 + size, x1:x1 + size] = out[y0:y0 + size, x0:x0 + size].copy()
    return out


def _nearest_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = img.shape[:2]
    ys = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(int), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(int), w - 1)
    return img[np.ix_(ys, xs)]


def pixelate(img, strength, rng):
    """21 Pixelate: nearest-neighbour down by z = 0.95 - strength**0.6, then back up."""
    h, w = img.shape[:2]
    z = 0.95 - strength**0.6
    small = _nearest_resize(img, max(1, math.ceil(z * h)), max(1, math.ceil(z * w)))
    return _nearest_resize(small, h, w)


def _multithresh(values: np.ndarray, n: int, iters: int = 100) -> np.ndarray:
    # Multi-level Otsu (MATLAB multithresh) maximises the between-class variance, i.e. it is
    # 1-D k-means with n + 1 classes; Lloyd's iterations on the 256-bin histogram, started at
    # quantiles, find it (or a close local optimum) deterministically.
    hist, edges = np.histogram(values, bins=256, range=(0, 1))
    centres = (edges[:-1] + edges[1:]) / 2
    cdf = np.cumsum(hist) / hist.sum()
    means = centres[np.minimum(np.searchsorted(cdf, (np.arange(n + 1) + 0.5) / (n + 1)), 255)]
    means = np.unique(means).astype(np.float64)
    for _ in range(iters):
        thresh = (means[:-1] + means[1:]) / 2
        label = np.searchsorted(thresh, centres)
        new = means.copy()
        for k in range(len(means)):
            m = label == k
            if hist[m].sum() > 0:
                new[k] = np.average(centres[m], weights=hist[m])
        if np.allclose(new, means):
            break
        means = new
    return (means[:-1] + means[1:]) / 2


def quantization(img, n_thresholds, rng):
    """22 Quantization: ``multithresh`` over all channels with ``n`` thresholds; each value
    maps to the upper threshold of its bin (0 below the first, 1 above the last)."""
    t = _multithresh(img.reshape(-1), int(n_thresholds))
    values = np.concatenate([[0.0], t[1:], [1.0]])
    return values[np.searchsorted(t, img, side="left")]


def color_block(img, n_blocks, rng):
    """23 Color_Block: ``n`` uniformly coloured 32 x 32 squares at random places.

    Reconstructed from the Python ports of ``imcolorblock.m`` (which was not at hand): 8-bit
    uniform colours, top-left corners uniform over the image.
    """
    size = 32
    h, w = img.shape[:2]
    if h < size or w < size:
        raise u.min_size_error("Color_Block", img.shape, size)
    out = img.copy()
    for _ in range(int(n_blocks)):
        colour = rng.integers(0, 256, 3) / 255
        y, x = rng.random(2)
        y0, x0 = int(y * (h - size)), int(x * (w - size))
        out[y0:y0 + size, x0:x0 + size] = colour
    return out


def high_sharpen(img, amount, rng):
    """24 High_Sharpen: ``imsharpen(I, 'Radius', 3, 'Amount', amount)``: unsharp masking of
    L* with a Gaussian of sigma 3, truncated to the RGB cube."""
    lab = u.rgb2lab(img)
    lum = lab[..., 0]
    lab[..., 0] = lum + amount * (lum - u.gauss_filter(lum, 3))
    return np.clip(u.lab2rgb(lab), 0, 1)


def _t(type_id, name, fn, params, random=False, identity_level=None):
    return DistortionType(type_id, name, _kadid(fn), tuple(params), random, identity_level,
                          (fn.__doc__ or "").strip().splitlines()[0])


#: The 25 types in KADID-10k's order, named as KADID-10k names them.
KADID_TYPES: tuple[DistortionType, ...] = (
    _t(1, "GBLUR", gblur, [0.1, 0.5, 1, 2, 5]),
    _t(2, "Lens_Blur", lens_blur, [1, 2, 4, 6, 8]),
    _t(3, "Motion_Blur", motion_blur, [1, 2, 4, 6, 10], random=True),
    _t(4, "Color_Diffusion", color_diffusion, [1, 3, 6, 8, 12]),
    _t(5, "Color_Shift", color_shift, [1, 3, 6, 8, 12], random=True),
    _t(6, "Color_Quantization", color_quantization, [64, 48, 32, 16, 8]),
    _t(7, "Saturation_Dist._HSV", saturation_hsv, [0.4, 0.2, 0.1, 0, -0.4]),
    _t(8, "Saturation_Dist._LAB", saturation_lab, [1, 2, 3, 6, 9]),
    _t(9, "JPEG2000", jpeg2000, [16, 32, 45, 120, 400]),
    _t(10, "JPEG", jpeg, [43, 36, 24, 7, 4]),
    _t(11, "AWGN", awgn, [0.001, 0.002, 0.003, 0.005, 0.01], random=True),
    _t(12, "AWGN_Color", awgn_color, [0.0001, 0.0005, 0.001, 0.002, 0.003], random=True),
    _t(13, "Impulse_Noise", impulse_noise, [0.001, 0.005, 0.01, 0.02, 0.03], random=True),
    _t(14, "Multiplicative_Noise", multiplicative_noise, [0.001, 0.005, 0.01, 0.02, 0.05],
       random=True),
    _t(15, "Denoising", denoising, [0.01, 0.03, 0.05, 0.1, 0.15], random=True),
    _t(16, "Brighten", brighten, [0.1, 0.2, 0.4, 0.7, 1.1]),
    _t(17, "Darken", darken, [0.05, 0.1, 0.2, 0.4, 0.8]),
    _t(18, "Mean_Shift", mean_shift, [0.15, 0.08, 0, -0.08, -0.15], identity_level=3),
    _t(19, "Jitter", jitter, [0.05, 0.1, 0.2, 0.5, 1], random=True),
    _t(20, "Non_Eccentricity_Patch", non_eccentricity_patch, [20, 40, 60, 80, 100],
       random=True),
    _t(21, "Pixelate", pixelate, [0.01, 0.05, 0.1, 0.2, 0.5]),
    _t(22, "Quantization", quantization, [20, 16, 13, 10, 7]),
    _t(23, "Color_Block", color_block, [2, 4, 6, 8, 10], random=True),
    _t(24, "High_Sharpen", high_sharpen, [1, 2, 3, 6, 12]),
    _t(25, "Contrast_Change", contrast_change, [0.3, 0.15, 0, -0.4, -0.6], identity_level=3),
)

#: KADID-10k's seven categories of distortion types, by type id (its paper's Table 1)
KADID_CATEGORIES: dict[str, range] = {
    "blur": range(1, 4), "colour": range(4, 9), "compression": range(9, 11),
    "noise": range(11, 16), "brightness": range(16, 19), "spatial": range(19, 24),
    "sharpness-contrast": range(24, 26)}


def kadid_category(kind: str | int | DistortionType) -> str:
    """The KADID-10k category of a KADID type ("blur", "colour", ...)."""
    t = kadid_type(kind.id if isinstance(kind, DistortionType) else kind)
    return next(c for c, ids in KADID_CATEGORIES.items() if t.id in ids)

_BY_NAME = {t.name: t for t in KADID_TYPES}
