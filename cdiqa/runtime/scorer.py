"""``Scorer``: a bundle, a backend session and a domain's head; pairs in, quality out.

::

    files/arrays ─► cdiqa.images ─► same-size groups ─► Session.infer ─► (sums, sumsq, counts)
                    (float32 RGB)    NCHW batches        graph            │ tiles: added
                                                                          ▼
                 score in [0, 1] ◄── head.score(v) ◄── features_from_stats = v (B, 2D)

The head is applied here, in numpy, not in the graph: one ONNX serves every domain (a domain
is a JSON profile), and a tiled image's stats are added before its one feature vector is
formed. Nothing here imports torch.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from cdiqa.errors import (Abandoned, BackendUnavailable, ConfigError, ManifestError, ShapeError,
                          describe)
from cdiqa.images import pixel_budget
from cdiqa.manifest import (DEFAULT_BUNDLE, OUTPUT_COUNTS, OUTPUT_SUMS, OUTPUT_SUMSQ, Manifest,
                            load_manifest, read_json)
from cdiqa.masking import features_from_stats
from cdiqa.runtime.backends import AUTO_ORDER, Session, SessionOptions, get_backend
from cdiqa.runtime.precision import AUTO, choose_precision
from cdiqa.runtime.preprocess import feed, group_by_size, pair_from
from cdiqa.runtime.tiling import DEFAULT_TILE, check_tiling, plan_tiles, tiled_stats

#: default largest batch run at once (memory grows with it; throughput saturates by ~8)
MAX_BATCH = 8


class Scorer:
    """Scores (reference, distorted) pairs with a bundle.

    >>> scorer = Scorer.load("bundle")                       # doctest: +SKIP
    >>> scorer.score("ref.png", "dist.png")                  # doctest: +SKIP
    0.8731
    """

    def __init__(self, manifest: Manifest, session: Session, domain: str | None = None, *,
                 max_batch: int = MAX_BATCH, tile: int | None = DEFAULT_TILE,
                 halo: int | None = None, max_pixels: int | None = None) -> None:
        self.manifest = manifest
        self.session = session
        self.domain = domain or manifest.default_domain
        self.head = load_profile(manifest, self.domain)
        self.max_batch = int(max_batch)
        self.tile = tile
        self.halo = manifest.tiling.halo if halo is None else int(halo)
        #: most pixels of one image (``cdiqa.images.pixel_budget``), checked before decoding
        self.max_pixels = pixel_budget(max_pixels)
        self._closed = False
        if self.max_batch < 1:
            raise ConfigError(describe("Batch", "scorer option", "max_batch", max_batch, ">= 1",
                                       "Use a positive batch size"))
        if tile is not None:  # fail now, not on the first large image
            check_tiling(tile, self.halo, manifest.tiling.alignment)
        #: "fp32", "int8" or "fp16": the precision of the session's graph
        self.precision = getattr(session, "precision", "fp32")
        #: opens a session for another domain's graph (set by ``load``; see ``with_domain``)
        self._reopen = None
        #: the maps graph's session, opened by the first ``quality_map``, and its threads
        self._maps = None
        self._threads: int | None = None

    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, backend: str = "auto",
             device: str | None = None,
             domain: str | None = None, *, options: SessionOptions | None = None,
             max_batch: int = MAX_BATCH, tile: int | None = DEFAULT_TILE,
             halo: int | None = None,
             verify: bool = True, precision: str = "fp32",
             max_pixels: int | None = None) -> "Scorer":
        """Open a bundle (by default the model bundled with cdiqa).

        >>> with Scorer.load() as scorer:                    # doctest: +SKIP
        ...     scorer.score("ref.png", "dist.png")

        Args:
            bundle: a directory written by ``iqa-export export``; None: the bundled default
                model (``cdiqa.manifest.DEFAULT_BUNDLE``).
            backend: "auto" (TensorRT if it loads, else ONNX Runtime) or a registered name.
            device: "cpu", "cuda", "cuda:N"; None lets the backend choose.
            domain: a domain profile of the bundle; None: the manifest's default.
            options: threads and cache directory for the backend.
            max_batch: most pairs run in one inference call.
            tile: interior size (multiple of 32) above which an image is scored in tiles
                (``tiling.DEFAULT_TILE``: bounded memory, and faster than whole above ~2 MP);
                None: never tile.
            halo: context around each tile; None: the manifest's.
            verify: check every file's sha256 before use.
            precision: "fp32", or "int8"/"fp16": the domain's reduced-precision graph
                (written by ``iqa-export calibrate``); "auto": the fastest of those whose
                accuracy gate passed, timed here on a probe pair (``cdiqa.runtime.precision``).
            max_pixels: most pixels of one image (over it: ``ImageTooLarge``, from the
                header, before decoding); None: ``cdiqa.images.MAX_PIXELS``.
        """
        from dataclasses import replace

        manifest = load_manifest(DEFAULT_BUNDLE if bundle is None else bundle, verify=verify)
        options = replace(options or SessionOptions(), domain=domain or manifest.default_domain)
        if precision == AUTO:
            precision = choose_precision(manifest, options.domain, lambda p: open_session(
                manifest, backend, device, replace(options, precision=p)))
        options = replace(options, precision=precision)
        session = _reopened(open_session(manifest, backend, device, options), precision)
        scorer = cls(manifest, session, domain, max_batch=max_batch, tile=tile, halo=halo,
                     max_pixels=max_pixels)
        scorer._threads = options.threads
        scorer._reopen = lambda d: _reopened(open_session(manifest, backend, device,
                                                          replace(options, domain=d)), precision)
        return scorer

    def with_domain(self, domain: str) -> "Scorer":
        """A scorer for another domain of the same bundle, sharing this one's session, or
        with a session of its own when the domain has its own graph (an adapted domain)."""
        session = self.session
        if (self.manifest.model_entry(domain, self.precision)
                != self.manifest.model_entry(self.domain, self.precision)):
            if self._reopen is None:
                raise ConfigError(describe("Domain", "scorer", domain, "a domain with its own "
                                           "graph", "a domain served by this session's graph",
                                           "Open it with Scorer.load(bundle, domain=...)"))
            session = self._reopen(domain)
        scorer = Scorer(self.manifest, session, domain, max_batch=self.max_batch,
                        tile=self.tile, halo=self.halo, max_pixels=self.max_pixels)
        scorer._reopen, scorer._threads = self._reopen, self._threads
        return scorer

    def score(self, ref, dist) -> float:
        """Quality of one pair, in [0, 1], higher is better (1.0 for identical images).

        ``ref`` and ``dist``: file paths, arrays (H, W[, C]) of uint8, uint16 or float in
        [0, 1], Pillow images or torch tensors (C, H, W) (see ``preprocess.image_from``).
        """
        return float(self.score_batch([ref], [dist])[0])

    def score_batch(self, refs: Sequence, dists: Sequence) -> np.ndarray:
        """Qualities (N,) of N pairs; same-size pairs run together, in any mix of sizes."""
        if len(refs) != len(dists):
            raise ShapeError(describe("Count", "images", "dists", len(dists),
                                      f"{len(refs)} like refs", "Pass one distorted per reference"))
        return self.score_pairs([pair_from(r, d, i, self.max_pixels)
                                 for i, (r, d) in enumerate(zip(refs, dists))])

    def score_pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                    deadlines: Sequence[float | None] | None = None) -> np.ndarray:
        """Qualities (N,) of checked float32 (H, W, 3) pairs (``preprocess.pair_from``).

        ``deadlines``: per pair, a ``time.monotonic()`` time (or None) after which nobody
        waits for its score; a tiled pair past it stops between tile batches (``Abandoned``).
        """
        return self.head.score(self.features_of_pairs(pairs, deadlines))

    def features_of_pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                          deadlines: Sequence[float | None] | None = None) -> np.ndarray:
        """v (N, 2D) of checked float32 (H, W, 3) pairs (from ``preprocess.pair_from``)."""
        v = np.empty((len(pairs), self.manifest.feature_dim), np.float32)
        small = []
        for i, (r, d) in enumerate(pairs):
            tiles = self._tiles(r.shape[:2])
            if tiles is None:
                small.append(i)
            else:
                run = _until(self.stats, deadlines[i] if deadlines else None, i)
                v[i] = features_from_stats(*tiled_stats(run, r, d, tiles, self.max_batch))[0]
        for idx in group_by_size((pairs[i][0] for i in small), self.max_batch):
            rows = [small[j] for j in idx]
            stats = self.stats(feed([pairs[i][0] for i in rows], [pairs[i][1] for i in rows]))
            v[rows] = features_from_stats(*stats)
        return v

    def quality_map(self, ref, dist) -> np.ndarray:
        """Where the degradation is: a map (H, W) float32 >= 0 of the image's size.

        The masking maps before pooling, weighted per scale and channel by this domain's head
        and upsampled to the image (``cdiqa.runtime.maps``): 0 for identical images, largest
        where the pair differs most visibly; its mean is the head's severity linearised at
        v = 0 (docs/runtime.md). Runs the bundle's maps graph (FP32, ONNX Runtime on CPU,
        opened on first use), in tiles if this scorer tiles. Inputs as for ``score``.

        >>> with Scorer.load() as scorer:                    # doctest: +SKIP
        ...     qmap = scorer.quality_map("ref.png", "dist.png")
        >>> qmap.shape, float(qmap.min())                    # doctest: +SKIP
        ((384, 512), 0.0)

        Raises:
            ManifestError: a bundle exported before quality maps (re-export it).
            ConfigError: a domain adapted by ``iqa-export calibrate`` (no maps graph of its own).
        """
        from cdiqa.runtime.maps import MapsGraph, combine_maps, map_weights, tiled_maps

        r, d = pair_from(ref, dist, None, self.max_pixels)
        if self._maps is None:
            self._maps = MapsGraph(self.manifest, self.domain, self._threads)
        strides = self.manifest.tiling.strides
        tiles = self._tiles(r.shape[:2])
        maps = ([n[0] for n in self._maps.run(feed([r], [d]))] if tiles is None
                else tiled_maps(self._maps.run, r, d, tiles, strides))
        weights = map_weights(self.head, self.manifest.model_config["channels"])
        return combine_maps(maps, strides, weights, r.shape[:2])

    def stats(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One graph run: (sums, sumsq, counts) of a validated feed (``preprocess.feed``)."""
        if self._closed:
            raise ConfigError(describe("State", "scorer", "Scorer", "closed", "an open scorer",
                                       "Open a new one with Scorer.load(...) (or score "
                                       "inside its with-block)"))
        out = self.session.infer(inputs)
        return out[OUTPUT_SUMS], out[OUTPUT_SUMSQ], out[OUTPUT_COUNTS]

    def tiled(self, size: tuple[int, int]) -> bool:
        """Whether an image of ``size`` (H, W) is scored in tiles by this scorer."""
        return self._tiles(size) is not None

    def _tiles(self, size: tuple[int, int]):
        if self.tile is None or max(size) <= self.tile + 2 * self.halo:
            return None
        return plan_tiles(*size, self.tile, self.halo, self.manifest.tiling.alignment)

    def close(self) -> None:
        """Close the backend session (and the maps graph's, if one was opened)."""
        self._closed = True
        self.session.close()
        self._maps = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(manifest: Manifest, backend: str = "auto", device: str | None = None,
                 options: SessionOptions | None = None) -> Session:
    """A session of the named backend, or with "auto" the first of ``AUTO_ORDER`` that loads.

    An explicitly named backend never falls back: its ``BackendUnavailable`` is raised.
    """
    if backend != "auto":
        return get_backend(backend).load(manifest, device=device, options=options)
    reasons = []
    for name in AUTO_ORDER:
        if name == "tensorrt" and device == "cpu":
            continue
        try:
            return get_backend(name).load(manifest, device=device, options=options)
        except BackendUnavailable as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendUnavailable("No backend could load the bundle: " + " | ".join(reasons))


def _until(run, deadline: float | None, index: int):
    """``run``, raising ``Abandoned`` once the monotonic ``deadline`` has passed (checked
    before each tile batch: a timed-out request stops within one batch)."""
    if deadline is None:
        return run

    def checked(inputs):
        if time.monotonic() > deadline:
            raise Abandoned(describe("Deadline", "pair", index, "passed between its tiles",
                                     "an answer in time", "The request timed out; its work "
                                     "was dropped"))
        return run(inputs)
    return checked


def _reopened(session: Session, precision: str) -> Session:
    session.precision = precision
    return session


def load_profile(manifest: Manifest, domain: str):
    """The quality head of ``domain`` from the bundle's profile JSON."""
    from cdiqa.heads import load_head

    path = manifest.domain_path(domain)
    head = load_head(dict(read_json(path, "domain profile")))
    if head.dim != manifest.feature_dim:
        raise ManifestError(describe("Head size", "domain profile", path, head.dim,
                                     f"{manifest.feature_dim} (the model's feature size)",
                                     "Fit the head on this model's features"))
    return head



#: scorers opened by ``score``, by (bundle, domain, precision, backend, device)
_OPEN: dict[tuple, Scorer] = {}


def score(ref, dist, *, bundle: str | os.PathLike | None = None, domain: str | None = None,
          precision: str = "fp32", backend: str = "auto", device: str | None = None,
          max_pixels: int | None = None) -> float:
    """Quality of one pair in [0, 1] (1.0 for identical images), in one call.

    The first call with given options opens the bundle (by default the bundled model) and
    keeps that scorer for later calls with the same options, so scoring in a loop does not
    re-read the bundle or re-create the session each time; for control over its lifetime,
    batching or tiling use ``Scorer.load``.

    Args:
        ref, dist: file paths, arrays (H, W[, C]) of uint8, uint16 or float in [0, 1], Pillow
            images or torch tensors (C, H, W) in [0, 1] (``preprocess.image_from``).
        bundle: a bundle directory; None: the bundled default model.
        domain, precision, backend, device, max_pixels: as for ``Scorer.load``.

    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((64, 64, 3))
    >>> score(image, image)                                  # doctest: +SKIP
    1.0
    """
    path = os.path.abspath(DEFAULT_BUNDLE if bundle is None else bundle)
    key = (path, domain, precision, backend, device, max_pixels)
    scorer = _OPEN.get(key)
    if scorer is None:
        scorer = _OPEN.setdefault(key, Scorer.load(path, backend, device, domain,
                                                   precision=precision, max_pixels=max_pixels))
    return scorer.score(ref, dist)
