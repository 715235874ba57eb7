"""Shared pieces of the distortion generator: the type record, argument checks, colour spaces
and MATLAB-compatible filters (numpy + scipy only).

The KADID-10k distortions were written in MATLAB; the helpers here reproduce the MATLAB
conventions the distortions depend on (``imgaussfilt`` kernel size, ``imfilter`` replicate
padding, ``rgb2lab`` with the D65 white point, ``rgb2ycbcr`` studio range), so that the
published level parameters keep their meaning.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cdiqa.errors import ConfigError, ImageError, describe

#: Levels every distortion accepts: 1 (mildest) .. 5 (strongest).
LEVELS = (1, 2, 3, 4, 5)

#: ``fn(image, param, rng) -> image``: float64 (H, W, 3) in, float64 (H, W, 3) out (any range;
#: ``distort`` clips to [0, 1]).
DistortFn = Callable[[np.ndarray, object, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class DistortionType:
    """One registered distortion with its five level parameters.

    Attributes:
        id: KADID-10k type id (1..25); ``None`` for the domain degradations.
        name: the registry name, e.g. ``"GBLUR"`` or ``"haze"``.
        fn: ``fn(image, param, rng)``, called by ``distort`` with ``params[level - 1]``.
        params: the parameter of each level 1..5.
        random: whether the result depends on the seed.
        identity_level: the level whose parameter leaves the image unchanged when the levels
            run from one direction through identity to the other (KADID's Mean_Shift and
            Contrast_Change); ``None`` when severity grows with the level.
        description: one line saying what the distortion does.
    """

    id: int | None
    name: str
    fn: DistortFn
    params: tuple
    random: bool = False
    identity_level: int | None = None
    description: str = ""

    @property
    def monotone(self) -> bool:
        """True when a higher level is always the stronger distortion."""
        return self.identity_level is None

    def severity(self, level: int) -> int:
        """The known severity rank of ``level``: the level itself, or for a type whose levels
        pass through identity the distance from ``identity_level`` (KADID's Mean_Shift level 1
        is as far from the reference as level 5, on the other side)."""
        return level if self.identity_level is None else abs(level - self.identity_level)

    def severity_pairs(self) -> tuple[tuple[int, int], ...]:
        """Level pairs ``(milder, stronger)`` whose order is known without any opinion score.

        For monotone types this is every ``(i, j)`` with ``i < j``. For types whose levels pass
        through identity, only pairs on the same side of ``identity_level``, ordered by the
        distance from it: the two sides are different distortions (brighter vs darker) and are
        never compared with each other.
        """
        if self.identity_level is None:
            return tuple((i, j) for i in LEVELS for j in LEVELS if i < j)
        c = self.identity_level
        sides = ([lv for lv in LEVELS if lv <= c][::-1], [lv for lv in LEVELS if lv >= c])
        return tuple((side[i], side[j]) for side in sides
                     for i in range(len(side)) for j in range(i + 1, len(side)))


def unknown_name_error(what: str, name: object, choices: Iterable[str], fix: str) -> ConfigError:
    """A ``ConfigError`` for an unknown name, suggesting the nearest choices (never using them)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    return ConfigError(describe(what, "name", name, "an unknown name", "one of "
                                + ", ".join(choices), fix) + hint)


def check_level(level: object, name: str, kind: str = "distortion") -> int:
    """Return ``level`` as int, or raise ``ConfigError`` unless it is an integer in 1..5."""
    ok = isinstance(level, (int, np.integer)) and not isinstance(level, bool)
    if not ok or int(level) not in LEVELS:
        raise ConfigError(describe("Level", kind, name, repr(level),
                                   "an integer 1..5", "Pass level=1 (mildest) to level=5"))
    return int(level)


def check_seed(seed: object) -> int:
    """Return ``seed`` as int, or raise ``ConfigError`` unless it is a non-negative integer."""
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not ok or int(seed) < 0:
        raise ConfigError(describe("Seed", "argument", "seed", repr(seed),
                                   "a non-negative integer", "Pass seed=0 or another int"))
    return int(seed)


def check_image(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` as float64 (H, W, 3), or raise ``ImageError``.

    Raises:
        ImageError: not a float array of shape (H, W, 3) with finite values in [0, 1].
    """
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(describe("Shape", "image", name, a.shape, "(H, W, 3)",
                                  "Pass one RGB image, channels last (see cdiqa.images)"))
    if a.dtype.kind != "f":
        raise ImageError(describe("Dtype", "image", name, a.dtype, "float32 in [0, 1]",
                                  "Convert with cdiqa.images.as_image"))
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        raise ImageError(describe("Range", "image", name, f"[{lo:.4g}, {hi:.4g}]", "[0, 1]",
                                  "Scale the image to [0, 1]"))
    return a


def min_size_error(kind: str, shape: tuple, need: int) -> ImageError:
    """The error for an image too small for a patch-based distortion."""
    return ImageError(describe("Size", "image for distortion", kind, f"{shape[1]}x{shape[0]}",
                               f"at least {need}x{need} pixels", "Use a larger image"))


# -- filters (MATLAB conventions) --------------------------------------------------------------

def gauss_kernel1d(sigma: float) -> np.ndarray:
    """MATLAB ``imgaussfilt``'s kernel: size 2*ceil(2*sigma)+1, normalised."""
    r = int(np.ceil(2 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x**2 / (2 * sigma**2))
    return k / k.sum()


def gauss_filter(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the first two axes with replicate padding (``imgaussfilt``)."""
    k = gauss_kernel1d(sigma)
    out = ndimage.correlate1d(a, k, axis=0, mode="nearest")
    return ndimage.correlate1d(out, k, axis=1, mode="nearest")


def filter2d(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``imfilter(a, kernel, 'replicate')`` per channel (correlation, same size)."""
    if a.ndim == 2:
        return ndimage.correlate(a, kernel, mode="nearest")
    return np.stack([ndimage.correlate(a[..., c], kernel, mode="nearest")
                     for c in range(a.shape[2])], axis=2)


def mapmm(a: np.ndarray) -> np.ndarray:
    """Min-max stretch to [0, 1] (MATLAB helper ``mapmm``); a flat array is returned as is."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else a


# -- colour spaces (MATLAB defaults: sRGB, D65) -------------------------------------------------

_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]])
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_D65 = np.array([0.9504559, 1.0, 1.0890578])
_EPS = (6 / 29) ** 3


def rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to CIE L*a*b* (L in 0..100), D65 white."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = (lin @ _RGB2XYZ.T) / _D65
    f = np.where(t > _EPS, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab2rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* to sRGB; out-of-gamut colours fall outside [0, 1] (callers truncate)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    t = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    lin = t @ _XYZ2RGB.T
    # Negative linear values keep their sign through the companding so nothing turns NaN.
    mag = np.abs(lin)
    enc = np.where(mag <= 0.0031308, 12.92 * mag, 1.055 * mag ** (1 / 2.4) - 0.055)
    return np.sign(lin) * enc


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB to HSV, all three in [0, 1] (as MATLAB ``rgb2hsv``)."""
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    d = np.where(delta > 0, delta, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.where(v == r, (g - b) / d, np.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = np.where(delta > 0, (h / 6) % 1.0, 0.0)
    return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV to RGB. Saturation outside [0, 1] is extrapolated, as MATLAB's formula does."""
    h, s, v = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    k = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = 1 - s, 1 - s * f, 1 - s * (1 - f)
    one = np.ones_like(s)
    table = [(one, t, p), (q, one, p), (p, one, t), (p, q, one), (t, p, one), (one, p, q)]
    out = np.zeros(hsv.shape)
    for sector, (r, g, b) in enumerate(table):
        m = k == sector
        out[m] = np.stack([r[m], g[m], b[m]], axis=-1)
    return out * v[..., None]


# MATLAB rgb2ycbcr for doubles: ITU-R BT.601, Y in [16, 235]/255, Cb/Cr in [16, 240]/255.
_YCC = np.array([[65.481, 128.553, 24.966],
                 [-37.797, -74.203, 112.0],
                 [112.0, -93.786, -18.214]]) / 255
_YCC_OFFSET = np.array([16, 128, 128]) / 255


def rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] to studio-range YCbCr in [0, 1] (MATLAB ``rgb2ycbcr``)."""
    return rgb @ _YCC.T + _YCC_OFFSET


def ycbcr2rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb2ycbcr``."""
    return (ycc - _YCC_OFFSET) @ np.linalg.inv(_YCC).T


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """Luma with MATLAB ``rgb2gray`` weights."""
    return rgb @ np.array([0.2989, 0.5870, 0.1140])
