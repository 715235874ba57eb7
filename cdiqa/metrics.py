"""Training-free FR metrics and the correlation measures of IQA benchmarks (numpy + scipy).

Every metric takes two float RGB images (H, W, 3) in [0, 1] of the same size, as
``cdiqa.images.load_image`` returns them, and computes on the luma channel where the
original definition does (SSIM, MS-SSIM, GMSD) and in the colour spaces of the colour
metrics (HaarPSI: YIQ; MDSI: LHM; VSI: LMN and CIELAB).

=========  ===========  ======================================================================
metric     better       definition followed
=========  ===========  ======================================================================
PSNR       higher       10 log10(1 / MSE) over all RGB values (peak 1)
SSIM       higher       Wang et al. 2004 reference ``ssim.m``: luma (BT.601) on 0..255, 11x11
                        Gaussian window σ = 1.5, K = (0.01, 0.03), 'valid' filtering, after the
                        ``f = max(1, round(min(H, W) / 256))`` box down-sampling
MS-SSIM    higher       Wang et al. 2003: 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363,
                        0.1333), 2x2 average down-sampling, negative cs clamped to 0
GMSD       lower        Xue et al. 2014: luma on 0..255, 2x2 average + /2 down-sampling,
                        Prewitt / 3 gradients, c = 170, standard deviation of the GMS map
HaarPSI    higher       Reisenhofer et al. 2018 as ``piq.haarpsi`` (defaults): YIQ on 0..255,
                        2x2 average down-sampling (a zero row and column appended first when
                        a side is odd), Haar filters of 2, 4, 8 px on Y (k/2 - 1 zeros before,
                        k/2 after, as MATLAB's ``conv2(.., 'same')``), C = 30, α = 4.2; scales
                        1-2 compared, scale 3 as weights; |2x2 means| of I and Q weighted by
                        the mean weight; (logit(weighted mean of sigmoid(α S)) / α)²;
                        at least 16x16 pixels
MDSI       lower        Nafchi et al. 2016 as ``piq.mdsi`` (defaults): RGB on 0..255, f x f
                        block means (f as SSIM's; (f - 1) // 2 zeros before, f // 2 after),
                        LHM colour space, Prewitt / 3 gradients of L of both images and of
                        their mean, C1 = 140, C2 = 55, C3 = 550, 'sum' combination α = 0.6,
                        complex power q = 0.25 (negative maps allowed), mean absolute
                        deviation (ρ = 1) to the power o = 0.25. Not symmetric: the first
                        argument is the reference (GS(R, F) - GS(D, F))
VSI        higher       Zhang et al. 2014 as ``piq.vsi`` (defaults): SDSP saliency (``sdsp``)
                        on a 256x256 bilinear resize, LMN on 0..255, f x f block means (f as
                        SSIM's; f // 2 replicated rows and columns before, (f - 1) // 2
                        after), Scharr / 16 gradients of L, C1 = 1.27, C2 = 386, C3 = 130,
                        α = 0.4, β = 0.02, pooled with max(VS1, VS2) as weight
=========  ===========  ======================================================================

HaarPSI, MDSI and VSI agree with piq 0.8.0 in float64 to ~1e-14 (``tests/test_metrics.py``
holds its values on fixed inputs), padding and resizing included. piq's choices are kept where
they are its own: VSI's CIELAB uses the D50 white with the sRGB (D65) matrix, its SDSP centre
prior peaks at pixel (127, 127) of the 256 x 256 grid (offsets ``i - 127``), and its
down-sampling pads f // 2 replicated pixels before the image where MDSI pads (f - 1) // 2
zeros: for an even f (2 on 512x384) VSI's blocks start one pixel earlier than MDSI's.

Correlations (``correlations``) follow VQEG practice: SRCC and KRCC on the raw predictions,
PLCC after the 4-parameter logistic ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``
fitted by least squares. Signs are kept (a decreasing logistic fit gives a negative PLCC):
pass "higher is better" predictions (negate GMSD and MDSI) to compare metrics side by side.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from cdiqa.errors import ConfigError, ShapeError, describe

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_LUMA = np.array([0.299, 0.587, 0.114])


def _check(ref: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, dist = np.asarray(ref, np.float64), np.asarray(dist, np.float64)
    if ref.shape != dist.shape or ref.ndim != 3 or ref.shape[2] != 3:
        raise ShapeError(describe("Shape", "image", "dist", dist.shape,
                                  f"{ref.shape} (H, W, 3) like the reference",
                                  "Pass two RGB images of the same size"))
    return ref, dist


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB [0, 1] image on the 0..255 scale of the original metrics."""
    return np.asarray(image, np.float64) @ _LUMA * 255.0


def psnr(ref: np.ndarray, dist: np.ndarray) -> float:
    """PSNR in dB over all RGB values, peak 1; ``inf`` for identical images.

    >>> x = np.zeros((8, 8, 3)); round(psnr(x, x + 0.1), 6)
    20.0
    """
    ref, dist = _check(ref, dist)
    mse = float(np.mean((ref - dist) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    w = np.outer(g, g)
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, w[::-1, ::-1], mode="valid")


def _ssim_parts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance term l and contrast-structure term cs maps (Wang et al.), 0..255 inputs."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _gaussian_window()
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mx * mx
    syy = _filter_valid(y * y, w) - my * my
    sxy = _filter_valid(x * y, w) - mx * my
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return lum, cs


def _min_side(x: np.ndarray, need: int, metric: str) -> None:
    if min(x.shape[:2]) < need:
        raise ShapeError(describe("Size", "image", metric, f"{x.shape[1]}x{x.shape[0]}",
                                  f"at least {need}x{need} pixels", f"{metric} needs larger images"))


def _box_down(x: np.ndarray, f: int) -> np.ndarray:
    """f x f box filter then keep every f-th pixel (``imfilter`` + subsampling in ssim.m)."""
    if f == 1:
        return x
    from scipy.ndimage import uniform_filter

    # MATLAB's imfilter(..., 'symmetric') with an even box is anchored at its upper-left
    # centre; origin -1 on even sizes (f // 2 - 1) reproduces that alignment.
    y = uniform_filter(x, size=f, mode="reflect", origin=-(1 if f % 2 == 0 else 0))
    return y[::f, ::f]


def ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean SSIM of the luma channels (1 for identical images)."""
    ref, dist = _check(ref, dist)
    x, y = luma(ref), luma(dist)
    f = max(1, int(round(min(x.shape) / 256)))
    x, y = _box_down(x, f), _box_down(y, f)
    _min_side(x, 11, "SSIM")
    lum, cs = _ssim_parts(x, y)
    return float(np.mean(lum * cs))


def _avg_down2(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    """Multi-scale SSIM of the luma channels, 5 scales (images >= 176 px per side)."""
    ref, dist = _check(ref, dist)
    x, y = luma(ref), luma(dist)
    _min_side(x, 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1), "MS-SSIM")
    value = 1.0
    for j, weight in enumerate(MS_SSIM_WEIGHTS):
        lum, cs = _ssim_parts(x, y)
        last = j == len(MS_SSIM_WEIGHTS) - 1
        term = np.mean(lum * cs) if last else np.mean(cs)
        value *= max(float(term), 0.0) ** weight
        x, y = _avg_down2(x), _avg_down2(y)
    return float(value)


def gmsd(ref: np.ndarray, dist: np.ndarray) -> float:
    """Gradient magnitude similarity deviation (0 for identical images, lower is better)."""
    from scipy.ndimage import convolve, uniform_filter

    ref, dist = _check(ref, dist)
    c = 170.0
    x, y = luma(ref), luma(dist)
    # GMSD.m: conv2(Y, ones(2)/4, 'same') averages x[i..i+1] with zero padding, then keeps
    # every second pixel starting at the first
    x = uniform_filter(x, size=2, mode="constant", origin=-1)[::2, ::2]
    y = uniform_filter(y, size=2, mode="constant", origin=-1)[::2, ::2]
    _min_side(x, 3, "GMSD")
    dx = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float64) / 3
    dy = dx.T

    def magnitude(im: np.ndarray) -> np.ndarray:
        gx = convolve(im, dx, mode="constant")
        gy = convolve(im, dy, mode="constant")
        return np.sqrt(gx * gx + gy * gy)

    mx, my = magnitude(x), magnitude(y)
    gms = (2 * mx * my + c) / (mx * mx + my * my + c)
    return float(np.std(gms))


# ---- colour FR metrics: HaarPSI, MDSI, VSI --------------------------------------------------

_YIQ = np.array([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
_LHM = np.array([[0.2989, 0.587, 0.114], [0.3, 0.04, -0.35], [0.34, -0.6, 0.17]])
_LMN = np.array([[0.06, 0.63, 0.27], [0.30, 0.04, -0.35], [0.34, -0.6, 0.17]])
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D50_WHITE = np.array([0.9642119944211994, 1.0, 0.8251882845188288])  # CIE 1931 2° observer
_EPS = float(np.finfo(np.float64).eps)
#: side of the square image on which VSI's SDSP saliency is computed
SDSP_SIZE = 256


def _colour_transform(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x @ m.T`` over the channels of (H, W, 3), without BLAS: its threaded GEMM stalls for
    milliseconds on a loaded machine, while three weighted sums cost ~0.5 ms per 256x256."""
    c0, c1, c2 = x[..., 0], x[..., 1], x[..., 2]
    out = np.empty(x.shape, np.float64)
    for k in range(3):
        out[..., k] = m[k, 0] * c0 + m[k, 1] * c1 + m[k, 2] * c2
    return out


def _similarity(a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """The Dice-like similarity ``(2ab + c) / (a² + b² + c)`` shared by the three metrics."""
    return (2.0 * a * b + c) / (a * a + b * b + c)


def _pool(x: np.ndarray, f: int, before: int = 0, after: int = 0, edge: bool = False
          ) -> np.ndarray:
    """Mean of every f x f block of ``x`` padded by ``before`` rows and columns at the start
    and ``after`` at the end (zeros, or copies of the border when ``edge``): ``F.pad`` then
    ``avg_pool2d``, so rows and columns past the last whole block are dropped. (H, W) or
    (H, W, C); the padding is never materialised."""
    if f == 1 and before == after == 0:
        return x
    for axis in (0, 1):
        n = x.shape[axis]
        start = np.arange((n + before + after) // f) * f - before
        total = None
        for j in range(f):
            idx = start + j
            part = np.take(x, np.clip(idx, 0, n - 1), axis=axis)
            if not edge and (idx[0] < 0 or idx[-1] >= n):
                keep = ((idx >= 0) & (idx < n)).astype(np.float64)
                part = part * keep.reshape((-1,) + (1,) * (x.ndim - axis - 1))
            total = part if total is None else total + part
        x = total / f
    return x


def _real_power(x: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(real, imaginary) parts of the principal power ``x ** p`` of a real array: a negative
    value is |x| e^{iπ}, as MDSI and VSI define their powers of a possibly negative map."""
    mag = np.abs(x) ** p
    neg = x < 0
    return np.where(neg, mag * np.cos(np.pi * p), mag), np.where(neg, mag * np.sin(np.pi * p), 0.0)


def _gradient_xy(x: np.ndarray, smooth: tuple[float, float, float]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical 3x3 gradients with zero padding: a central difference across
    one axis, the ``smooth`` weights along the other (Prewitt: 1, 1, 1 / 3; Scharr: 3, 10, 3
    / 16). Signs are irrelevant: only magnitudes are used."""
    a, b, c = smooth
    p = np.pad(x, 1)
    s = a * p[:-2] + b * p[1:-1] + c * p[2:]  # smoothed down the rows: (H, W + 2)
    gx = s[:, 2:] - s[:, :-2]
    s = a * p[:, :-2] + b * p[:, 1:-1] + c * p[:, 2:]  # smoothed along the rows: (H + 2, W)
    gy = s[2:] - s[:-2]
    return gx, gy


def haarpsi(ref: np.ndarray, dist: np.ndarray) -> float:
    """Haar wavelet-based perceptual similarity index (1 for identical images, higher is better).

    Reisenhofer et al. 2018 with piq's defaults (3 scales, C = 30, α = 4.2, down-sampling on):
    YIQ on 0..255, 2x2 average down-sampling, Haar filters of 2, 4 and 8 px on Y (zero padded
    as MATLAB's ``conv2(.., 'same')``), 2x2 means of |I| and |Q| for the colour term, weights
    from the coarsest scale, and the squared logit of the weighted mean sigmoid similarity.
    """
    from scipy.ndimage import correlate1d

    ref, dist = _check(ref, dist)
    _min_side(ref, 16, "HaarPSI")
    c, alpha = 30.0, 4.2
    odd = max(ref.shape[0] % 2, ref.shape[1] % 2)

    def decompose(im: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # zero row and column appended to both axes when either side is odd, then halved
        # (down-sampling RGB before the linear YIQ transform is the same)
        yiq = _colour_transform(_pool(im * 255.0, 2, 0, odd), _YIQ)
        y = yiq[..., 0]
        coeffs = []  # |horizontal|, |vertical| edge responses of scales 1, 2, 3
        for k in (2, 4, 8):
            # k x k Haar filter (+1/k over the upper half, -1/k over the lower) correlated with
            # k/2 - 1 zeros above and k/2 below: origin -1 anchors the even taps that way
            step = np.r_[np.ones(k // 2), -np.ones(k // 2)] / k
            box = np.ones(k)
            for a, b in ((step, box), (box, step)):
                out = correlate1d(y, a, axis=0, mode="constant", origin=-1)
                coeffs.append(np.abs(correlate1d(out, b, axis=1, mode="constant", origin=-1)))
        p = np.pad(yiq[..., 1:], ((0, 1), (0, 1), (0, 0)))  # 2x2 means of I, Q, then |.|
        iq = np.abs(0.25 * (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]))
        return coeffs, [iq[..., 0], iq[..., 1]]

    cx, iqx = decompose(ref)
    cy, iqy = decompose(dist)
    weights, sims = [], []
    for o in range(2):  # horizontal, vertical: scales 1 and 2 compared, scale 3 weights
        sims.append(0.5 * (_similarity(cx[o], cy[o], c) + _similarity(cx[o + 2], cy[o + 2], c)))
        weights.append(np.maximum(cx[o + 4], cy[o + 4]))
    sims.append(0.5 * (_similarity(iqx[0], iqy[0], c) + _similarity(iqx[1], iqy[1], c)))
    weights.append(0.5 * (weights[0] + weights[1]))
    num = sum(float(np.sum(w / (1.0 + np.exp(-alpha * s)))) for s, w in zip(sims, weights))
    den = sum(float(np.sum(w)) for w in weights)
    if den == 0:  # two black images (no luma anywhere, hence no chroma): identical
        return 1.0
    score = (num + _EPS) / (den + _EPS)
    return float((np.log(score / (1.0 - score)) / alpha) ** 2)


def mdsi(ref: np.ndarray, dist: np.ndarray) -> float:
    """Mean deviation similarity index (0 for identical images, lower is better).

    Nafchi et al. 2016 with piq's defaults: 'sum' combination, C1 = 140, C2 = 55, C3 = 550,
    α = 0.6, q = 0.25, ρ = 1, o = 0.25. RGB on 0..255 averaged over f x f blocks
    (f = max(1, round(min(H, W) / 256)), (f - 1) // 2 zeros before and f // 2 after),
    LHM colour space, Prewitt / 3 gradients of L and of the mean L of both images. Not
    symmetric: ``ref`` is the paper's R in GS(R, D) + GS(R, F) - GS(D, F) (piq's ``x``).
    """
    ref, dist = _check(ref, dist)
    _min_side(ref, 3, "MDSI")
    c1, c2, c3, alpha, q, rho, o = 140.0, 55.0, 550.0, 0.6, 0.25, 1.0, 0.25
    f = max(1, int(round(min(ref.shape[:2]) / 256)))

    def prepare(im: np.ndarray) -> np.ndarray:
        return _colour_transform(_pool(im * 255.0, f, (f - 1) // 2, f // 2), _LHM)

    x, y = prepare(ref), prepare(dist)
    gxx, gxy = _gradient_xy(x[..., 0], (1 / 3, 1 / 3, 1 / 3))
    gyx, gyy = _gradient_xy(y[..., 0], (1 / 3, 1 / 3, 1 / 3))
    gm_x, gm_y = np.hypot(gxx, gxy), np.hypot(gyx, gyy)
    gm_avg = np.hypot(0.5 * (gxx + gyx), 0.5 * (gxy + gyy))  # gradient of the mean L (linear)
    gs = _similarity(gm_x, gm_y, c1) + _similarity(gm_x, gm_avg, c2) - _similarity(gm_y, gm_avg, c2)
    hx, mx, hy, my = x[..., 1], x[..., 2], y[..., 1], y[..., 2]
    cs = (2 * (hx * hy + mx * my) + c3) / (hx * hx + hy * hy + mx * mx + my * my + c3)
    re, im = _real_power(alpha * gs + (1 - alpha) * cs, q)  # gcs may be negative: complex power
    dev = np.hypot(re - re.mean(), im - im.mean())
    return float(np.mean(dev ** rho) ** (o / rho))


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool):
    """Sparse (n_out, n_in) matrix of ``interpolate(mode='bilinear')`` along one axis, without
    anti-aliasing: source ``(i + 0.5) n_in / n_out - 0.5`` clamped at 0, or ``i (n_in - 1) /
    (n_out - 1)`` with aligned corners; two taps, the upper clamped to the last pixel."""
    from scipy import sparse

    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    rows = np.arange(n_out)
    return sparse.csr_matrix((np.r_[1 - lam, lam], (np.r_[rows, rows], np.r_[i0, i1])),
                             shape=(n_out, n_in))


def _resize_bilinear(x: np.ndarray, size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """Bilinear resize of (H, W) or (H, W, C) to ``size`` (torch's ``interpolate``)."""
    (h, w), rest = x.shape[:2], x.shape[2:]
    y = _bilinear_matrix(h, size[0], align_corners) @ x.reshape(h, -1)  # rows: (h', W C)
    y = y.reshape(size[0], w, -1).transpose(1, 0, 2).reshape(w, -1)  # (W, h' C)
    y = _bilinear_matrix(w, size[1], align_corners) @ y  # columns: (w', h' C)
    return np.ascontiguousarray(y.reshape(size[1], size[0], *rest).swapaxes(0, 1))


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of sRGB in [0, 1]: sRGB linearisation, sRGB (D65) to XYZ matrix, D50 white."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = _colour_transform(lin, _SRGB_TO_XYZ) / _D50_WHITE
    t = np.where(t > 0.008856, np.cbrt(t), (903.3 * t + 16.0) / 116.0)
    return np.stack([116.0 * t[..., 1] - 16.0, 500.0 * (t[..., 0] - t[..., 1]),
                     200.0 * (t[..., 1] - t[..., 2])], axis=-1)


@functools.lru_cache(maxsize=4)
def _sdsp_filters(n: int = SDSP_SIZE, omega_0: float = 0.021, sigma_f: float = 1.34,
                  sigma_d: float = 145.0) -> tuple[np.ndarray, np.ndarray]:
    """(log-Gabor transfer function in FFT order, centre prior) of SDSP on an n x n image."""
    u = (np.arange(n) - n // 2) / n  # frequencies of an even-sized grid, centred
    radius = np.hypot(u[:, None], u[None, :])
    r = np.fft.ifftshift(np.where(radius <= 0.5, radius, 0.0))
    with np.errstate(divide="ignore"):
        lg = np.where(r > 0, np.exp(-np.log(r / omega_0) ** 2 / (2 * sigma_f ** 2)), 0.0)
    # piq keeps the real part of ifft2(fft2(lab) * lg); for a real image that is the inverse
    # real FFT with the even part of lg, so half the spectrum suffices
    lg = 0.5 * (lg + np.roll(lg[::-1, ::-1], 1, axis=(0, 1)))[:, : n // 2 + 1]
    # the centre prior on piq's grid: pixel offsets from the centre, shifted by one
    d = u * n + 1
    prior = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / sigma_d ** 2)
    for a in (lg, prior):
        a.flags.writeable = False  # cached: shared by every call
    return lg, prior


def sdsp(image: np.ndarray) -> np.ndarray:
    """SDSP visual saliency (Zhang et al. 2013) of an RGB [0, 1] image, (H, W) in [0, 1].

    piq's form: bilinear resize to 256 x 256, CIELAB (D50), log-Gabor band-pass (ω0 = 0.021,
    σF = 1.34) magnitude x centre prior (σD = 145) x warm-colour prior (σC = 0.001 on the
    min-max normalised a*, b*), bilinear resize back (corners aligned), min-max normalised.
    """
    from scipy import fft

    lg, prior = _sdsp_filters()
    lab = _srgb_to_lab(_resize_bilinear(image, (SDSP_SIZE, SDSP_SIZE), align_corners=False))
    n = SDSP_SIZE
    band = fft.irfft2(fft.rfft2(lab, axes=(0, 1)) * lg[..., None], s=(n, n), axes=(0, 1))
    s_f = np.sqrt(np.sum(band * band, axis=-1))
    lo, hi = lab.min(axis=(0, 1)), lab.max(axis=(0, 1))
    norm = (lab - lo) / (hi - lo + _EPS)
    s_c = 1.0 - np.exp(-(norm[..., 1] ** 2 + norm[..., 2] ** 2) / 0.001 ** 2)
    vs = _resize_bilinear(s_f * prior * s_c, image.shape[:2], align_corners=True)
    lo, hi = vs.min(), vs.max()
    return (vs - lo) / (hi - lo + _EPS)


def vsi(ref: np.ndarray, dist: np.ndarray) -> float:
    """Visual saliency-induced index (1 for identical images, higher is better).

    Zhang et al. 2014 with piq's defaults: C1 = 1.27, C2 = 386, C3 = 130, α = 0.4, β = 0.02,
    SDSP saliency (``sdsp``), LMN on 0..255, f x f block means after f // 2 replicated rows
    and columns before and (f - 1) // 2 after (f = max(1, round(min(H, W) / 256))), Scharr / 16
    gradients of L, pooled with the larger saliency of the two images as weight.
    """
    ref, dist = _check(ref, dist)
    _min_side(ref, 3, "VSI")
    c1, c2, c3, alpha, beta = 1.27, 386.0, 130.0, 0.4, 0.02
    f = max(1, int(round(min(ref.shape[:2]) / 256)))
    pad = (f // 2, (f - 1) // 2) if f > 1 else (0, 0)

    def prepare(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (_pool(sdsp(im), f, *pad, edge=True),
                _colour_transform(_pool(im * 255.0, f, *pad, edge=True), _LMN))

    (vs_x, x), (vs_y, y) = prepare(ref), prepare(dist)
    gm_x = np.hypot(*_gradient_xy(x[..., 0], (3 / 16, 10 / 16, 3 / 16)))
    gm_y = np.hypot(*_gradient_xy(y[..., 0], (3 / 16, 10 / 16, 3 / 16)))
    s_c = _similarity(x[..., 1], y[..., 1], c3) * _similarity(x[..., 2], y[..., 2], c3)
    s_c = _real_power(s_c, beta)[0]  # s_c < 0 where a chroma sign flips: real part of s_c^β
    s = _similarity(vs_x, vs_y, c1) * _similarity(gm_x, gm_y, c2) ** alpha * s_c
    vs_max = np.maximum(vs_x, vs_y)
    return float((np.sum(s * vs_max) + _EPS) / (np.sum(vs_max) + _EPS))


#: name -> (function, higher_is_better)
METRICS = {"PSNR": (psnr, True), "SSIM": (ssim, True), "MS-SSIM": (ms_ssim, True),
           "GMSD": (gmsd, False), "HaarPSI": (haarpsi, True), "MDSI": (mdsi, False),
           "VSI": (vsi, True)}
#: dB given to identical images (an identity level), so that correlations stay finite
PSNR_CAP = 100.0


def pair_scores(pairs, progress=None) -> dict[str, np.ndarray]:
    """Every metric of every (ref, dist) pair, "higher is better": the lower-is-better ones
    (GMSD, MDSI) negated, PSNR capped at ``PSNR_CAP``. ``progress(done, total)`` is called
    after each pair."""
    pairs = list(pairs)
    out = {name: np.zeros(len(pairs)) for name in METRICS}
    for i, (ref, dist) in enumerate(pairs):
        for name, (fn, higher) in METRICS.items():
            out[name][i] = fn(ref, dist) if higher else -fn(ref, dist)
        if progress is not None:
            progress(i + 1, len(pairs))
    out["PSNR"] = np.minimum(out["PSNR"], PSNR_CAP)
    return out


# ---- correlations -------------------------------------------------------------------------


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = np.clip(-(np.asarray(x, np.float64) - b3) / (abs(b4) + 1e-12), -700, 700)
    return (b1 - b2) / (1 + np.exp(z)) + b2


def fit_logistic4(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares parameters of ``logistic4`` mapping ``pred`` onto ``target``.

    The fit is not convex. Given (b3, b4) the model is linear in (b1, b2), so a grid over
    centres (quantiles of pred) and slopes is solved exactly first, and the best grid point
    is then refined by Levenberg-Marquardt.
    """
    from scipy.optimize import curve_fit

    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    scale = float(np.std(pred)) or 1.0
    best, best_sse = None, np.inf
    for b3 in np.quantile(pred, np.linspace(0.05, 0.95, 19)):
        for b4 in scale * np.geomspace(0.05, 10, 15):
            sig = logistic4(pred, 1.0, 0.0, b3, b4)
            a = np.stack([sig, 1 - sig], axis=1)
            (b1, b2), *_ = np.linalg.lstsq(a, target, rcond=None)
            sse = float(np.sum((a @ (b1, b2) - target) ** 2))
            if sse < best_sse:
                best, best_sse = np.array([b1, b2, b3, b4]), sse
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(logistic4, pred, target, p0=best, maxfev=5000)
        if np.sum((logistic4(pred, *params) - target) ** 2) < best_sse:
            best = params
    except RuntimeError:  # no convergence: keep the best grid point
        pass
    return np.asarray(best, np.float64)


def _check_pairs(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if pred.shape != target.shape or pred.size < 3:
        raise ConfigError(describe("Length", "arrays", "pred/target", (pred.size, target.size),
                                   "two equal lengths >= 3", "Pass one prediction per target"))
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(target))):
        raise ConfigError(describe("Values", "arrays", "pred/target", "NaN or inf",
                                   "finite values", "Drop or fix the invalid predictions"))
    return pred, target


def srcc(pred, target) -> float:
    """Spearman rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(*_check_pairs(pred, target))[0])


def krcc(pred, target) -> float:
    """Kendall rank correlation (tau-b)."""
    from scipy.stats import kendalltau

    return float(kendalltau(*_check_pairs(pred, target))[0])


def plcc(pred, target) -> float:
    """Pearson correlation after the 4-parameter logistic fit of ``pred`` onto ``target``."""
    pred, target = _check_pairs(pred, target)
    params = fit_logistic4(pred, target)
    fitted = logistic4(pred, *params)
    if np.std(fitted) == 0 or np.std(target) == 0:
        return 0.0
    # a decreasing fit means pred orders the targets backwards: keep that sign, like SRCC
    direction = 1.0 if params[0] >= params[1] else -1.0
    return direction * float(np.corrcoef(fitted, target)[0, 1])


def correlations(pred, target) -> dict[str, float]:
    """{"SRCC", "KRCC", "PLCC"} of predictions against targets.

    >>> r = correlations([1, 2, 3, 4, 5], [1.1, 1.9, 3.2, 3.9, 5.5])
    >>> {k: round(x, 2) for k, x in r.items()}
    {'SRCC': 1.0, 'KRCC': 1.0, 'PLCC': 0.99}
    """
    return {"SRCC": srcc(pred, target), "KRCC": krcc(pred, target), "PLCC": plcc(pred, target)}
