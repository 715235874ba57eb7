"""Tiling: interiors partition the image on the 32 px grid; tiled scores match untiled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import ConfigError
from cdiqa.masking import MIN_SIZE, STRIDES
from cdiqa.runtime.tiling import plan_tiles
from cdiqa.tolerances import tolerance


@pytest.mark.parametrize("h, w, tile, halo", [(300, 517, 128, 64), (64, 64, 32, 0),
                                              (1080, 1920, 512, 96), (250, 97, 64, 32)])
def test_interiors_partition_the_image(h: int, w: int, tile: int, halo: int) -> None:
    tiles = plan_tiles(h, w, tile, halo)
    cover = np.zeros((h, w), int)
    for t in tiles:
        cy0, cx0, cy1, cx1 = t.crop
        y0, x0, y1, x1 = t.roi
        assert cy0 % 32 == 0 and cx0 % 32 == 0  # every scale's grid coincides with the image's
        assert min(t.size) >= MIN_SIZE or min(t.size) == min(h, w)
        assert 0 <= y0 < y1 <= cy1 - cy0 and 0 <= x0 < x1 <= cx1 - cx0
        gy0, gx0 = cy0 + y0, cx0 + x0
        assert gy0 % 32 == 0 and gx0 % 32 == 0  # interiors start on the 32 px grid
        assert (gy0 - cy0 >= halo or cy0 == 0) and (gx0 - cx0 >= halo or cx0 == 0)
        cover[gy0:cy0 + y1, gx0:cx0 + x1] += 1
    assert np.all(cover == 1)


def test_bad_tile_options() -> None:
    with pytest.raises(ConfigError, match=r"Size for tiling option 'tile': got 100, expected a "
                                          r"multiple of 32"):
        plan_tiles(512, 512, 100, 64)
    with pytest.raises(ConfigError, match=r"'halo': got 48"):
        plan_tiles(512, 512, 128, 48)


@pytest.fixture(scope="module")
def large_pair(natural_image: np.ndarray):
    """A 384x448 natural image (non-square, several tiles: the 96x128 crop mirrored out) and a
    distorted copy."""
    ref = np.pad(natural_image, ((0, 288), (0, 320), (0, 0)), mode="symmetric")
    rng = np.random.default_rng(0)
    dist = np.clip(ref * 0.92 + 0.03 + rng.normal(0, 0.03, ref.shape), 0, 1)
    return ref, dist.astype(np.float32)


def test_tiled_score_matches_untiled(tiny_bundle: Path, large_pair) -> None:
    pytest.importorskip("onnxruntime")
    from cdiqa.runtime import Scorer

    whole = Scorer.load(tiny_bundle, backend="onnxruntime")
    tiled = Scorer(whole.manifest, whole.session, tile=128)  # halo: the manifest's 128 px
    ref, dist = large_pair
    assert len(tiled._tiles(ref.shape[:2])) == 12
    a, b = whole.score(ref, dist), tiled.score(ref, dist)
    assert abs(a - b) <= tolerance("tiled_score", "fp32").atol
    assert tiled.score(ref, ref) == 1.0
    # pixel counts add up exactly: the interiors partition every scale
    from cdiqa.runtime.preprocess import feed
    from cdiqa.runtime.tiling import tiled_stats

    counts = tiled_stats(whole.stats, ref, dist, tiled._tiles(ref.shape[:2]), 8)[2]
    np.testing.assert_array_equal(counts, whole.stats(feed([ref], [dist]))[2])
    assert counts[0, 0] == (384 // STRIDES[0]) * (448 // STRIDES[0])


def test_large_images_are_tiled_by_default(tiny_bundle: Path, large_pair) -> None:
    """Without a tile option an image with a side over DEFAULT_TILE + 2 halo is scored in
    tiles (memory bounded by the tile, not the image), one below it whole; --tile 0 never."""
    pytest.importorskip("onnxruntime")
    from cdiqa.runtime import Scorer
    from cdiqa.runtime.batch import ScorerConfig, tile_option
    from cdiqa.runtime.tiling import DEFAULT_TILE

    scorer = Scorer.load(tiny_bundle, backend="onnxruntime")
    edge = DEFAULT_TILE + 2 * scorer.halo
    assert scorer.tile == DEFAULT_TILE == ScorerConfig().tile
    assert not scorer.tiled((96, edge)) and scorer.tiled((96, edge + 32))
    ref, dist = (np.tile(x, (1, (edge + 32) // x.shape[1] + 1, 1))[:96, :edge + 32]
                 for x in large_pair)
    whole = Scorer(scorer.manifest, scorer.session, tile=None)
    assert abs(scorer.score(ref, dist) - whole.score(ref, dist)) <= tolerance(
        "tiled_score", "fp32").atol
    assert (tile_option(None), tile_option(0), tile_option(256)) == (DEFAULT_TILE, None, 256)
