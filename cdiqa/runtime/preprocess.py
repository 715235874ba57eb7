"""Images in, graph feeds out: numpy only.

Files and arrays become float32 RGB (H, W, 3) in [0, 1] through ``cdiqa.images`` (the one
place conversions happen), pairs are checked, and same-size pairs are stacked into NCHW
batches with a full-image ``roi``.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Sequence

import numpy as np

from cdiqa.images import (array_from_tensor, as_image, check_pair, image_from_pil,
                          load_image)
from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI


def image_from(image, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """One image as float32 RGB (H, W, 3), of at most ``max_pixels`` pixels (None: the
    default, ``cdiqa.images.MAX_PIXELS``; checked before decoding or copying).

    ``image``: a file path; a numpy array (H, W[, C]) of uint8, uint16 or float in [0, 1]; a
    Pillow image; or a torch tensor (C, H, W) / (1, C, H, W), float in [0, 1] or uint8.
    Pillow and torch are recognised through ``sys.modules``: a tensor or a PIL image can only
    exist once its library was imported, so neither is ever imported here.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    pil, torch = sys.modules.get("PIL.Image"), sys.modules.get("torch")
    if pil is not None and isinstance(image, pil.Image):
        return image_from_pil(image, name, max_pixels)
    if torch is not None and isinstance(image, torch.Tensor):
        image = array_from_tensor(image, name)
    return as_image(image, name=name, max_pixels=max_pixels)


def pair_from(ref, dist, index: int | None = None, max_pixels: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Load and check one (reference, distorted) pair; names carry ``index`` for messages.
    Each image is held to ``max_pixels`` (None: the default) before it is decoded."""
    suffix = "" if index is None else f"[{index}]"
    ref_name = str(ref) if isinstance(ref, (str, os.PathLike)) else f"ref{suffix}"
    dist_name = str(dist) if isinstance(dist, (str, os.PathLike)) else f"dist{suffix}"
    r, d = image_from(ref, ref_name, max_pixels), image_from(dist, dist_name, max_pixels)
    check_pair(r, d, ref_name, dist_name)
    return r, d


def nchw(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack (H, W, 3) images into one contiguous float32 (B, 3, H, W) batch."""
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def full_roi(batch: int, height: int, width: int) -> np.ndarray:
    """(B, 4) int32 rows [0, 0, H, W): score whole images."""
    return np.tile(np.array([[0, 0, height, width]], np.int32), (batch, 1))


def feed(refs: Sequence[np.ndarray], dists: Sequence[np.ndarray],
         roi: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The graph feed of same-size (H, W, 3) pairs; ``roi`` defaults to the whole images."""
    ref, dist = nchw(refs), nchw(dists)
    if roi is None:
        roi = full_roi(*ref.shape[:1], *ref.shape[2:])
    return {INPUT_REF: ref, INPUT_DIST: dist, INPUT_ROI: roi}


def group_by_size(images: Iterable[np.ndarray], max_batch: int) -> list[list[int]]:
    """Indices of same-size images in chunks of at most ``max_batch`` (>= 1), in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    return [idx[k:k + max_batch] for idx in groups.values() for k in range(0, len(idx), max_batch)]
