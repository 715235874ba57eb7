"""The numpy reference against a brute-force reading of its own docstring formula."""

import numpy as np
import pytest

from cdiqa import masking
from cdiqa.errors import ConfigError, ShapeError
from cdiqa.tolerances import relative_error, tolerance


def brute_box_mean(a, k):
    r = k // 2
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    for y in range(h):
        for x in range(w):
            win = a[..., max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            out[..., y, x] = win.mean(axis=(-1, -2))
    return out


def brute_stats(e, a, gamma, sigma, k):
    b, c = e.shape[:2]
    p = brute_box_mean(a, k)
    out = np.zeros((b, 2, c))
    for i in range(b):
        for j in range(c):
            n = np.abs(e[i, j]) ** gamma[j] / (sigma[j] ** gamma[j] + p[i, j])
            out[i, 0, j], out[i, 1, j] = n.sum(), (n * n).sum()
    return out


@pytest.mark.parametrize("shape,k", [((2, 3, 7, 9), 3), ((1, 2, 5, 4), 5), ((1, 1, 3, 2), 7),
                                     ((1, 4, 1, 1), 3), ((2, 2, 6, 6), 1)])
def test_stats_match_brute_force(rng, shape, k):
    e = rng.standard_normal(shape)
    a = rng.random(shape)
    gamma = rng.uniform(1, 3, shape[1])
    sigma = rng.uniform(0.05, 1, shape[1])
    got = masking.masking_stats(e, a, gamma, sigma, k)
    assert got.shape == (shape[0], 2, shape[1])
    np.testing.assert_allclose(got, brute_stats(e, a, gamma, sigma, k), rtol=1e-12)


def test_float32_option_within_tolerance(rng):
    e, a = rng.standard_normal((2, 8, 40, 33)), rng.random((2, 8, 40, 33))
    g, s = np.full(8, 2.0), np.full(8, 0.3)
    ref = masking.masking_stats(e, a, g, s, 5)
    f32 = masking.masking_stats(e, a, g, s, 5, dtype=np.float32)
    assert f32.dtype == np.float32
    assert relative_error(f32, ref) < tolerance("numpy", "fp32").rtol


def test_identical_images_give_zero_features(rng):
    a = rng.random((1, 4, 8, 8))
    st = masking.masking_stats(np.zeros_like(a), a, np.full(4, 2.0), np.ones(4), 3)
    counts = np.full((1, 4), 64.0)
    v = masking.features_from_stats(st[:, 0], st[:, 1], counts)
    assert v.shape == (1, 8) and np.all(v == 0)


def test_tiles_combine_exactly(rng):
    """Sums over a partition of the map, added, equal the sums over the whole map."""
    e, a = rng.standard_normal((1, 3, 12, 10)), rng.random((1, 3, 12, 10))
    g, s = np.full(3, 2.0), np.full(3, 0.5)
    n = masking.masking_map(e, a, g, s, 3)
    parts = []
    for rows in (slice(0, 5), slice(5, 12)):
        m = n[:, :, rows]
        parts.append((m.sum((2, 3)), (m * m).sum((2, 3)), np.full((1, 3), m[0, 0].size)))
    whole = masking.masking_stats(e, a, g, s, 3)
    sums, sumsq, counts = masking.combine_stats(parts)
    np.testing.assert_allclose(sums, whole[:, 0], rtol=1e-12)
    np.testing.assert_allclose(sumsq, whole[:, 1], rtol=1e-12)
    v = masking.features_from_stats(sums, sumsq, counts, dtype=np.float64)
    np.testing.assert_allclose(v[:, :3], n.mean((2, 3)), rtol=1e-12)
    np.testing.assert_allclose(v[:, 3:], n.std((2, 3)), rtol=1e-6)


@pytest.mark.parametrize("k", [0, 2, -3, 4.5])
def test_bad_window(k):
    with pytest.raises(ConfigError, match="attribute 'k'.*odd"):
        masking.box_mean(np.ones((1, 1, 4, 4)), k)


def test_bad_shapes_and_params():
    e = np.ones((1, 2, 4, 4))
    with pytest.raises(ShapeError, match="tensor 'a'"):
        masking.masking_stats(e, np.ones((1, 2, 4, 5)), np.ones(2), np.ones(2), 3)
    with pytest.raises(ShapeError, match="tensor 'gamma'.*expected \\(2,\\)"):
        masking.masking_stats(e, e, np.ones(3), np.ones(2), 3)
    with pytest.raises(ConfigError, match="tensor 'sigma'"):
        masking.masking_stats(e, e, np.ones(2), np.array([1.0, 0.0]), 3)
    with pytest.raises(ShapeError, match="Rank for tensor 'e'"):
        masking.masking_stats(e[0], e[0], np.ones(2), np.ones(2), 3)
    with pytest.raises(ShapeError, match="counts"):
        masking.features_from_stats(np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ShapeError, match="No tiles"):
        masking.combine_stats([])
