r"""Quality maps: where in the image the degradation is (``Scorer.quality_map``). numpy only.

The bundle's maps graph (``model.maps.onnx``) gives, per masking scale s, the masked
degradation n_s (C_s, h_s, w_s) that the scoring graph sums. The map combines them with the
weights of the domain's head and upsamples each scale to the image (nearest, stride_s)::

    M(y, x) = sum_s sum_c  beta[s,c] * n_s[c, y // stride_s, x // stride_s]

    beta[s,c] = alpha_i + alpha_{D+i}      i: feature of (s, c); v = [means (D), stds (D)]
    alpha_i   = lim_{t->0+} g(t e_i) / t   the head's severity g per unit of feature v_i near
                                           v = 0 (a one-sided derivative, >= 0 since g >= 0)

So M >= 0, M == 0 exactly for identical images (n == 0), and a scale and channel counts as
much in the map as the head lets it count in the score. Consistency with the score: when H and
W are multiples of every stride, mean(M) = sum_{s,c} beta[s,c] * mean(n_s,c) = beta . v[:D],
the head's severity linearised at v = 0 with each std feature's weight given to its map's
mean (a std of a non-negative map grows with where the map is large). For the default model
mean(M) rises with the severity level along every distortion ladder that its score falls on
(tests/runtime/test_quality_map.py). Rows and columns beyond the last whole cell of a scale
repeat its edge.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import ConfigError, ManifestError, describe
from cdiqa.manifest import (FILE_ONNX, FILE_ONNX_MAPS, INPUT_DIST, INPUT_REF, MAX_GRAPH_BYTES,
                            Manifest, checked_file)

#: the small step of ``map_weights``' one-sided derivative (relative to each feature's scale)
_STEP = 1e-6

#: colour table for PNG maps: 9 stops of matplotlib's "inferno" (perceptually uniform, dark =
#: undegraded, bright = most degraded), linearly interpolated
INFERNO = np.array([(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                    (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)], np.float64)


def map_weights(head, channels: Sequence[int]) -> list[np.ndarray]:
    """beta (C_s,) per scale: what a unit of each scale's masking map adds to ``head``'s
    severity near v = 0 (the module docstring)."""
    d = int(sum(channels))
    if head.dim != 2 * d:
        raise ManifestError(describe("Head size", "quality map", "head", head.dim,
                                     f"{2 * d} (2 x the model's channels)",
                                     "Fit the head on this model's features"))
    step = _STEP * head.scale
    alpha = head.severity(np.diag(step)) / step
    beta = alpha[:d] + alpha[d:]
    return np.split(beta, np.cumsum(channels)[:-1])


def combine_maps(maps: Sequence[np.ndarray], strides: Sequence[int],
                 weights: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """M (H, W) float32 from per-scale maps (C_s, h_s, w_s), their strides and ``weights``."""
    if not len(maps) == len(strides) == len(weights):
        raise ManifestError(describe("Scales", "maps graph", "outputs", len(maps),
                                     f"{len(strides)} (the manifest's tiling.strides)",
                                     "Re-export the bundle with `iqa-export export`"))
    grids: dict[tuple, np.ndarray] = {}  # scales of one stride and shape add before upsampling
    for n, stride, beta in zip(maps, strides, weights):
        key = (int(stride), n.shape[1:])
        grid = np.tensordot(np.asarray(beta, np.float32), n.astype(np.float32), 1)
        grids[key] = grids[key] + grid if key in grids else grid
    out = np.zeros(size, np.float32)
    for (stride, _), grid in grids.items():
        out += _upsample(grid, stride, size)
    return out


def _upsample(grid: np.ndarray, stride: int, size: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling by ``stride``, cut or edge-padded to ``size``."""
    up = grid.repeat(stride, 0).repeat(stride, 1)[:size[0], :size[1]]
    pad = ((0, size[0] - up.shape[0]), (0, size[1] - up.shape[1]))
    return np.pad(up, pad, mode="edge") if any(p[1] for p in pad) else up


#: default top of the colour scale: this percentile of the map, not its maximum (a map's
#: largest values are a few isolated pixels, which would leave the rest of the image dark)
TOP_PERCENTILE = 99.5


def colour_map(qmap: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """uint8 (H, W, 3) image of ``qmap`` through ``INFERNO``: 0 black, ``vmax`` and above the
    brightest colour. ``vmax`` None: the map's ``TOP_PERCENTILE`` percentile (its maximum if
    that is 0). An all-zero map is all black."""
    qmap = np.asarray(qmap, np.float64)
    top = _top(qmap) if vmax is None else float(vmax)
    if not np.isfinite(top) or top < 0:
        raise ConfigError(describe("vmax", "quality map", "vmax", vmax, "a finite value >= 0",
                                   "Pass None to scale by the map's maximum"))
    x = np.clip(qmap / top, 0, 1) if top > 0 else np.zeros_like(qmap)
    pos = x * (len(INFERNO) - 1)
    lo = np.minimum(pos.astype(np.int64), len(INFERNO) - 2)
    frac = (pos - lo)[..., None]
    rgb = INFERNO[lo] * (1 - frac) + INFERNO[lo + 1] * frac
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _top(qmap: np.ndarray) -> float:
    if not qmap.size:
        return 0.0
    top = float(np.percentile(qmap, TOP_PERCENTILE))
    return top if top > 0 else float(qmap.max())


def write_map_png(path, qmap: np.ndarray, vmax: float | None = None):
    """Write ``colour_map(qmap, vmax)`` as an image file (PNG by default), atomically."""
    from cdiqa.images import save_image

    save_image(path, colour_map(qmap, vmax))
    return path


class MapsGraph:
    """An ONNX Runtime session (CPU) of a bundle's maps graph: (ref, dist) -> per-scale n."""

    def __init__(self, manifest: Manifest, domain: str | None = None,
                 threads: int | None = None) -> None:
        path = maps_path(manifest, domain)  # an old bundle's message first
        ort = _lazy.onnxruntime()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.inter_op_num_threads = 1
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Per-scale maps (B, C_s, h_s, w_s) of a scoring feed (its ``roi`` is not used)."""
        return self._session.run(self.output_names, {k: feed[k] for k in (INPUT_REF,
                                                                           INPUT_DIST)})


def maps_path(manifest: Manifest, domain: str | None = None):
    """The maps graph that serves ``domain``: the bundle's, for a domain the base graph scores.

    Raises:
        ManifestError: a bundle exported before quality maps (no ``model.maps.onnx``).
        ConfigError: a domain adapted by ``iqa-export calibrate``, which has its own graph but
            no maps graph of its own.
    """
    if FILE_ONNX_MAPS not in manifest.files:
        raise ManifestError(describe("Maps graph", "bundle", manifest.root,
                                     "no model.maps.onnx (exported before quality maps)",
                                     "a bundle with the maps graph",
                                     "Re-export it with `iqa-export export` to get quality maps"))
    domain = domain or manifest.default_domain
    if manifest.model_entry(domain, "fp32") != manifest.files[FILE_ONNX]:
        raise ConfigError(describe("Domain", "quality map", domain, "a domain with its own "
                                   "adapted graph", "a domain the bundle's base graph scores",
                                   "Quality maps are exported for the base graph only; use "
                                   "another domain"))
    return checked_file(manifest.path(FILE_ONNX_MAPS), manifest.files[FILE_ONNX_MAPS].path,
                        "maps graph", MAX_GRAPH_BYTES)


RunMaps = Callable[[dict], list[np.ndarray]]


def tiled_maps(run: RunMaps, ref: np.ndarray, dist: np.ndarray, tiles, strides: Sequence[int]
               ) -> list[np.ndarray]:
    """Per-scale maps (C_s, h_s, w_s) of one (H, W, 3) pair, stitched from ``tiles``' interiors.

    Crops start on multiples of the tiling alignment, a multiple of every stride, so each
    crop's feature grid is a window of the untiled one; only interior cells are kept.
    """
    from cdiqa.runtime.preprocess import feed

    height, width = ref.shape[:2]
    out: list[np.ndarray | None] = [None] * len(strides)
    extent = [(0, 0)] * len(strides)
    for t in tiles:
        y0, x0, y1, x1 = t.crop
        parts = run(feed([ref[y0:y1, x0:x1]], [dist[y0:y1, x0:x1]]))
        for s, (n, st) in enumerate(zip(parts, strides)):
            if y0 % st or x0 % st:  # the tiling alignment must be a multiple of every stride
                raise ConfigError(describe("Tile origin", "quality map", f"scale {s}",
                                           (y0, x0), f"multiples of its stride {st}",
                                           "Map this image untiled (no --tile)"))
            n = n[0]
            if out[s] is None:
                out[s] = np.zeros((n.shape[0], -(-height // st), -(-width // st)), np.float32)
            r0, c0 = t.roi[0] // st, t.roi[1] // st
            r1, c1 = min(n.shape[1], -(-t.roi[2] // st)), min(n.shape[2], -(-t.roi[3] // st))
            gy, gx = y0 // st + r0, x0 // st + c0
            out[s][:, gy:gy + r1 - r0, gx:gx + c1 - c0] = n[:, r0:r1, c0:c1]
            extent[s] = (max(extent[s][0], gy + r1 - r0), max(extent[s][1], gx + c1 - c0))
    return [m[:, :h, :w] for m, (h, w) in zip(out, extent)]
