r"""The masking math: the single reference that every implementation is checked against.

Visual masking (METHOD.md item 6). Per scale, with ``e = d(D) - d(R)`` (B, C, H, W), a
non-negative content activity ``a`` (B, C, H, W), per-channel ``gamma > 0`` and
``sigma > 0``, and an odd window ``k``::

    n[b,c,y,x] = |e[b,c,y,x]|^g_c / (s_c^g_c + P_k(a)[b,c,y,x])

    P_k(a)[y,x] = sum of a over the k x k window centred on (y, x) that lies inside the map
                  / number of those pixels          (zero padding, count_include_pad = false)

    stats[b,0,c] = sum_{y,x} n[b,c,y,x]        stats[b,1,c] = sum_{y,x} n[b,c,y,x]^2

The op emits sums, not mean and std, so tiles of a large image combine exactly by adding
their stats and pixel counts; ``features_from_stats`` turns the totals into the feature vector
v = [mean_c, std_c] over all channels of all scales. v is exactly 0 for identical images.

The torch module (``cdiqa.model.masking``), the ONNX decomposition, the CUDA kernel
(``cdiqa/kernels/masking``) and the runtime all agree with this file within
``cdiqa.tolerances``.
"""

from __future__ import annotations

import numpy as np

from cdiqa.errors import ConfigError, ShapeError, describe

#: Smallest image side the network accepts: the coarsest scale (stride 32) keeps 2 x 2 pixels.
MIN_SIZE = 64
#: Stride of each masking scale of the conv trunk relative to the input image; the largest
#: (32) is the tile alignment. A model's own strides: ``ModelConfig.strides``.
STRIDES = (4, 8, 16, 32)
#: Keeps the gradient of std finite at var = 0 while std(0) stays exactly 0.
STD_EPS = 1e-12


def check_window(k: int) -> int:
    """Validate the box window: a positive odd integer."""
    if int(k) != k or k < 1 or k % 2 == 0:
        raise ConfigError(describe("Window", "attribute", "k", k, "an odd integer >= 1",
                                   "Use k = 3, 5 or 7"))
    return int(k)


def box_mean(a: np.ndarray, k: int) -> np.ndarray:
    """k x k box mean over the last two axes, zero padding, divided by the valid-pixel count.

    Uses integral images along each axis (separable), so the cost does not grow with k.
    """
    k = check_window(k)
    r = k // 2
    out = a
    for axis in (-2, -1):
        out = _window_sum(out, r, axis)
    h, w = a.shape[-2:]
    count = _valid_count(h, r)[:, None] * _valid_count(w, r)[None, :]
    return out / count.astype(out.dtype)


def _window_sum(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    n = x.shape[axis]
    x = np.moveaxis(x, axis, -1)
    csum = np.concatenate([np.zeros(x.shape[:-1] + (1,), x.dtype), np.cumsum(x, axis=-1)], -1)
    idx = np.arange(n)
    hi = np.minimum(idx + r + 1, n)
    lo = np.maximum(idx - r, 0)
    return np.moveaxis(csum[..., hi] - csum[..., lo], -1, axis)


def _valid_count(n: int, r: int) -> np.ndarray:
    idx = np.arange(n)
    return np.minimum(idx + r, n - 1) - np.maximum(idx - r, 0) + 1


def check_inputs(e: np.ndarray, a: np.ndarray, gamma: np.ndarray, sigma: np.ndarray) -> None:
    """Raise ``ShapeError``/``ConfigError`` unless the op's inputs fit together."""
    if e.ndim != 4:
        raise ShapeError(describe("Rank", "tensor", "e", e.shape, "(B, C, H, W)",
                                  "Pass NCHW maps"))
    if a.shape != e.shape:
        raise ShapeError(describe("Shape", "tensor", "a", a.shape, e.shape,
                                  "e and a must have the same shape"))
    c = e.shape[1]
    for name, p in (("gamma", gamma), ("sigma", sigma)):
        if np.shape(p) != (c,):
            raise ShapeError(describe("Shape", "tensor", name, np.shape(p), (c,),
                                      "Give one value per channel"))
        if not np.all(np.asarray(p) > 0):
            raise ConfigError(describe("Value", "tensor", name, "a value <= 0", "> 0",
                                       "gamma and sigma must be positive"))


def masking_map(e, a, gamma, sigma, k: int, *, dtype=np.float64) -> np.ndarray:
    """The masked degradation map n (B, C, H, W), computed in ``dtype``."""
    e, a = np.asarray(e, dtype), np.asarray(a, dtype)
    gamma, sigma = np.asarray(gamma, dtype), np.asarray(sigma, dtype)
    check_inputs(e, a, gamma, sigma)
    g = gamma[None, :, None, None]
    return np.abs(e) ** g / (sigma[None, :, None, None] ** g + box_mean(a, k))


def masking_stats(e, a, gamma, sigma, k: int, *, dtype=np.float64) -> np.ndarray:
    """Per-channel sum and sum of squares of n: (B, 2, C), in ``dtype``.

    >>> e = np.zeros((1, 2, 4, 4)); a = np.ones((1, 2, 4, 4))
    >>> masking_stats(e, a, np.full(2, 2.0), np.ones(2), 3).tolist()
    [[[0.0, 0.0], [0.0, 0.0]]]
    """
    n = masking_map(e, a, gamma, sigma, k, dtype=dtype)
    return np.stack([n.sum(axis=(2, 3)), (n * n).sum(axis=(2, 3))], axis=1)


def features_from_stats(sums, sumsq, counts, *, dtype=np.float32) -> np.ndarray:
    """Feature vector v (B, 2D) = [mean (D), std (D)] from summed stats of all scales.

    Args:
        sums, sumsq: (B, D) per-channel sums of n and n^2, added over tiles if tiled.
        counts: (B, D) number of pixels summed for each channel (> 0).
    """
    sums, sumsq, counts = (np.asarray(x, dtype) for x in (sums, sumsq, counts))
    if not (sums.shape == sumsq.shape == counts.shape) or sums.ndim != 2:
        raise ShapeError(describe("Shape", "tensors", "sums/sumsq/counts",
                                  (sums.shape, sumsq.shape, counts.shape), "three equal (B, D)",
                                  "Pass the graph outputs unchanged"))
    if np.any(counts <= 0):
        raise ShapeError(describe("Value", "tensor", "counts", "a count <= 0", "> 0",
                                  "Every tile must cover at least one pixel of each scale"))
    mean = sums / counts
    var = np.maximum(sumsq / counts - mean * mean, 0)
    eps = dtype(STD_EPS) if isinstance(dtype, type) else np.asarray(STD_EPS, dtype)
    std = np.sqrt(var + eps) - np.sqrt(eps)
    return np.concatenate([mean, std], axis=1)


def combine_stats(parts):
    """Add (sums, sumsq, counts) triples of tiles of one image: exact, order-independent."""
    parts = list(parts)
    if not parts:
        raise ShapeError("No tiles to combine: got 0 (sums, sumsq, counts) triples, expected "
                         "at least 1. Score at least one tile.")
    return tuple(np.sum([p[i] for p in parts], axis=0) for i in range(3))
