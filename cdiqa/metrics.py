"""Training-free FR metrics and the correlation measures of IQA benchmarks (numpy + scipy).

Every metric takes two float RGB images (H, W, 3) in [0, 1] of the same size, as
``cdiqa.images.load_image`` returns them, and computes on the luma channel where the
original definition does (SSIM, MS-SSIM, GMSD).

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
=========  ===========  ======================================================================

Correlations (``correlations``) follow VQEG practice: SRCC and KRCC on the raw predictions,
PLCC after the 4-parameter logistic ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``
fitted by least squares. Signs are kept (a decreasing logistic fit gives a negative PLCC):
pass "higher is better" predictions (negate GMSD) to compare metrics side by side.
"""

from __future__ import annotations

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


#: name -> (function, higher_is_better)
METRICS = {"PSNR": (psnr, True), "SSIM": (ssim, True), "MS-SSIM": (ms_ssim, True),
           "GMSD": (gmsd, False)}
#: dB given to identical images (an identity level), so that correlations stay finite
PSNR_CAP = 100.0


def pair_scores(pairs, progress=None) -> dict[str, np.ndarray]:
    """Every metric of every (ref, dist) pair, "higher is better": GMSD negated, PSNR capped
    at ``PSNR_CAP``. ``progress(done, total)`` is called after each pair."""
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
