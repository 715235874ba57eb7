"""Large scans in tiles: each tile's stats summed, the feature vector computed once.

::

    image  0        t        2t       H          interiors: multiples of ``tile`` (itself a
           |--------|--------|--------|          multiple of the 32 px alignment), so every
    crop   |-----------|                         scale's feature pixels split exactly
                 |--------------------|          between the tiles
              crop = interior + halo, start aligned down to 32, clipped to the image

Each crop runs with ``roi`` = its interior in crop coordinates: only the interior's feature
pixels add to (sums, sumsq, counts). The halo gives the encoder the context it sees untiled;
features near a crop edge that is not an image edge still differ slightly (zero padding
instead of the neighbouring pixels), which is what ``tolerance("tiled_score")`` bounds. The
per-tile triples are added (``cdiqa.masking.combine_stats``, exact) before
``features_from_stats`` and the head, so tiling never averages scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cdiqa.errors import ConfigError, describe
from cdiqa.masking import MIN_SIZE, combine_stats
from cdiqa.runtime.preprocess import feed, group_by_size

#: interior size above which ``Scorer`` (and ``score``, ``score-video``) tile an image by
#: default. Measured on a 12 MP pair (3000x4000, 1 thread, docs/runtime.md): 1.08 s and 1.47 GB
#: peak against 1.92 s and 2.84 GB whole, and closer to a float64 reference (4 MP: 7.6e-7 off
#: against 4.5e-6, whose float32 sums run over the whole image); memory per call is then at
#: most ``max_batch`` crops of ``tile + 2 halo`` px, whatever the image size
DEFAULT_TILE = 1024

#: runs one batch: (NCHW feed) -> (sums, sumsq, counts)
RunStats = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Tile:
    """One tile: ``crop`` [y0, x0, y1, x1) in the image, ``roi`` its interior in the crop."""

    crop: tuple[int, int, int, int]
    roi: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the crop."""
        return self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]


def plan_tiles(height: int, width: int, tile: int, halo: int, alignment: int = 32
               ) -> list[Tile]:
    """Tiles covering a ``height`` x ``width`` image; interiors partition it exactly.

    Raises:
        ConfigError: ``tile`` or ``halo`` not a positive multiple of ``alignment``.
    """
    check_tiling(tile, halo, alignment)
    rows = _spans(height, tile, halo, alignment)
    cols = _spans(width, tile, halo, alignment)
    return [Tile((cy0, cx0, cy1, cx1), (y0 - cy0, x0 - cx0, y1 - cy0, x1 - cx0))
            for (y0, y1, cy0, cy1) in rows for (x0, x1, cx0, cx1) in cols]


def check_tiling(tile: int, halo: int, alignment: int = 32) -> None:
    """Raise ``ConfigError`` unless ``tile`` > 0 and ``halo`` >= 0 are multiples of ``alignment``."""
    for name, value, low in (("tile", tile, alignment), ("halo", halo, 0)):
        if value < low or value % alignment:
            raise ConfigError(describe("Size", "tiling option", name, value,
                                       f"a multiple of {alignment} >= {low}",
                                       f"Round {name} to a multiple of {alignment}"))


def _spans(n: int, tile: int, halo: int, alignment: int) -> list[tuple[int, int, int, int]]:
    """(interior start, end, crop start, end) along one axis."""
    out = []
    for start in range(0, n, tile):
        end = min(n, start + tile)
        c1 = min(n, end + halo)
        c0 = max(0, start - halo)
        if c1 - c0 < MIN_SIZE:  # a short crop: widen it backwards (still aligned), then forwards
            c0 = max(0, (c1 - MIN_SIZE) // alignment * alignment)
            c1 = max(c1, min(n, c0 + MIN_SIZE))
        out.append((start, end, c0, c1))
    return out


def tiled_stats(run: RunStats, ref: np.ndarray, dist: np.ndarray, tiles: list[Tile],
                max_batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed (sums, sumsq, counts) (1, D) of one (H, W, 3) pair over ``tiles``.

    Same-size crops run together in batches of at most ``max_batch``.
    """
    crops = [(ref[t.crop[0]:t.crop[2], t.crop[1]:t.crop[3]],
              dist[t.crop[0]:t.crop[2], t.crop[1]:t.crop[3]]) for t in tiles]
    parts = []
    for idx in group_by_size((c[0] for c in crops), max_batch):
        roi = np.array([tiles[i].roi for i in idx], np.int32)
        sums, sumsq, counts = run(feed([crops[i][0] for i in idx], [crops[i][1] for i in idx],
                                       roi))
        parts += [(sums[j:j + 1], sumsq[j:j + 1], counts[j:j + 1]) for j in range(len(idx))]
    return combine_stats(parts)
