"""Reference images and the distorted pairs that training and evaluation draw from (numpy).

Built-in references are the free images that ship with scikit-image (``skimage.data``, no
download). They are split once, here, into three disjoint sets of source images, so that no
evaluation image is ever trained on or used to fit a labelled head:

==========  ==================================================================================
split       images
==========  ==================================================================================
eval        astronaut, chelsea, coffee: colour photographs, the KADID-13 benchmark's references
heads       rocket, motorcycle_left, motorcycle_right (one scene): colour photographs that
            label the few-shot and supervised heads and fit the label-free one
train       the heads images, hubble_deep_field, immunohistochemistry, retina and the
            grayscale photographs and textures camera, moon, coins, clock, page, text, brick,
            grass, gravel, cell (label-free training reads no score)
==========  ==================================================================================

Heads are fitted on photographs because labels of other imagery (hubble, microscopy, fundus)
were measured to transfer badly to photographs (docs/model.md).

Training batches are a pure function of (run seed, step): resuming at step n draws exactly
the batches an uninterrupted run would have drawn.

The KADID-10k marginals (mean opinion score per (type, level) of the 13 development types)
are package data, ``cdiqa/assets/kadid/kadid_dev_marginals.csv`` (origin and columns in the
README beside it), read through ``importlib.resources`` so that an installed wheel has them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cdiqa.errors import ConfigError, describe
from cdiqa.images import IMAGE_SUFFIXES, as_image, load_image
from cdiqa.masking import MIN_SIZE

EVAL_IMAGES = ("astronaut", "chelsea", "coffee")
HEAD_IMAGES = ("rocket", "motorcycle_left", "motorcycle_right")
TRAIN_IMAGES = HEAD_IMAGES + ("hubble_deep_field", "immunohistochemistry", "retina", "camera",
                              "moon", "coins", "clock", "page", "text", "brick", "grass",
                              "gravel", "cell")

#: The KADID-10k marginals of the 13 development types, shipped in the package
MARGINALS = resources.files("cdiqa") / "assets" / "kadid" / "kadid_dev_marginals.csv"


@lru_cache(maxsize=None)
def builtin_image(name: str) -> np.ndarray:
    """One scikit-image sample as float32 RGB (H, W, 3) in [0, 1] (gray copied to RGB)."""
    from skimage import data

    known = EVAL_IMAGES + TRAIN_IMAGES
    if name not in known:
        raise ConfigError(describe("Image", "built-in reference", name, "an unknown name",
                                   f"one of {list(known)}", "Pick a listed image"))
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return as_image(left if name.endswith("left") else right, name)
    return as_image(getattr(data, name)(), name)


def builtin_references(split: str) -> dict[str, np.ndarray]:
    """name -> image of one split: "eval", "heads" or "train"."""
    names = {"eval": EVAL_IMAGES, "heads": HEAD_IMAGES, "train": TRAIN_IMAGES}
    if split not in names:
        raise ConfigError(describe("Split", "argument", "split", split,
                                   "'eval', 'heads' or 'train'", "Pick one of the three"))
    return {n: builtin_image(n) for n in names[split]}


def tiles(image: np.ndarray, size: int) -> list[np.ndarray]:
    """Non-overlapping size x size tiles, centred as a grid (at least one: the centre crop)."""
    h, w = image.shape[:2]
    ny, nx = max(1, h // size), max(1, w // size)
    y0, x0 = (h - ny * size) // 2, (w - nx * size) // 2
    return [image[y0 + i * size: y0 + (i + 1) * size, x0 + j * size: x0 + (j + 1) * size]
            for i in range(ny) for j in range(nx)]


def reference_tiles(split: str, size: int = 256, max_tiles: int | None = None,
                    ) -> dict[str, np.ndarray]:
    """``"<image>_<i>"`` -> tile, for every built-in image of ``split``.

    With ``max_tiles``, each image keeps only that many tiles: those of most luminance
    contrast (the dark borders of retina and hubble_deep_field hold nothing to score).
    """
    from cdiqa.metrics import luma

    out = {}
    for name, img in builtin_references(split).items():
        items = [(f"{name}_{i}", t) for i, t in enumerate(tiles(img, size))]
        if max_tiles is not None:
            items.sort(key=lambda it: -float(luma(it[1]).std()))
            items = sorted(items[:max_tiles], key=lambda it: int(it[0].rsplit("_", 1)[1]))
        out.update(items)
    return out


def write_reference_tiles(split: str, folder: str | os.PathLike, size: int = 256,
                          max_tiles: int | None = 4) -> list[Path]:
    """Save the tiles of a built-in split as 8-bit PNGs (``<image>_<i>.png``); their paths."""
    from cdiqa.images import save_image

    folder = Path(folder)
    paths = []
    for name, t in reference_tiles(split, size, max_tiles).items():
        save_image(folder / f"{name}.png", t)
        paths.append(folder / f"{name}.png")
    return paths


def render_references(refs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                      kinds: Sequence[str] | None = None, levels: Sequence[int] = (1, 2, 3, 4, 5),
                      seed: int = 0, builtin: str | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Distort reference files (and/or a built-in split's tiles, saved under ``out/refs``)
    with ``kinds`` (default: the 13 KADID development types); returns ``pairs.csv``."""
    from cdiqa.model.distortions import render_set

    refs = [Path(r) for r in refs]
    if builtin is not None:
        refs += write_reference_tiles(builtin, Path(out) / "refs")
    return render_set(refs, out, kinds=list(kinds) if kinds else list(dev_kinds()),
                      levels=levels, seed=seed, progress=progress)


def load_reference_folder(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every image file directly in ``folder`` (sorted by name), as float32 RGB.

    Raises:
        ConfigError: the folder is missing or holds no image file.
        ImageError: a file cannot be read (named in the message).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"Reference folder '{folder}' does not exist. Check the path.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(describe("Images", "reference folder", folder, "no image file",
                                   f"files ending in {', '.join(IMAGE_SUFFIXES)}",
                                   "Point --refs at a folder of reference images"))
    return {p.name: load_image(p) for p in files}


def read_marginals(path: str | os.PathLike | None = None) -> dict[tuple[str, int], float]:
    """(type_name, level) -> mean opinion score, from the KADID development marginals CSV.

    Args:
        path: a CSV with columns type_name, level, mos_mean; ``None``: the packaged copy
            (``MARGINALS``).

    Raises:
        ConfigError: the file is missing or a row lacks a column or a number.
    """
    source = Path(path) if path is not None else MARGINALS
    if not source.is_file():
        fix = ("Check the path, or pass no path to use the packaged copy" if path is not None
               else "The installed cdiqa lacks its package data; reinstall cdiqa")
        raise ConfigError(describe("File", "KADID marginals", source, "nothing there",
                                   "a CSV with columns type_name, level, mos_mean", fix))
    rows = list(csv.DictReader(io.StringIO(source.read_text(encoding="utf-8"), newline="")))
    try:
        return {(r["type_name"], int(r["level"])): float(r["mos_mean"]) for r in rows}
    except (KeyError, ValueError) as exc:
        fix = "Fix the row, or pass no path to use the packaged copy"
        raise ConfigError(describe("Columns", "KADID marginals", source, f"a bad row ({exc})",
                                   "type_name, level, mos_mean", fix)) from None


def dev_kinds(path: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The 13 KADID development types named in the marginals CSV, in file order."""
    return tuple(dict.fromkeys(t for t, _ in read_marginals(path)))


def step_seed(seed: int, step: int, salt: str = "batch") -> int:
    """A stable 63-bit seed for one training step (SHA-256, machine independent)."""
    msg = f"cdiqa.train\0{salt}\0{int(seed)}\0{int(step)}".encode()
    return int.from_bytes(hashlib.sha256(msg).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Batch:
    """References and two ordered levels of one distortion each: (B, 3, H, W) float32."""

    ref: np.ndarray
    milder: np.ndarray
    stronger: np.ndarray
    valid: np.ndarray  # (B,) bool: milder and stronger differ, so their order can be learned
    kinds: tuple[str, ...]
    levels: tuple[tuple[int, int], ...]


def _fit_to(image: np.ndarray, size: int) -> np.ndarray:
    """Upscale (bicubic) an image whose shorter side is below ``size``."""
    h, w = image.shape[:2]
    if min(h, w) >= size:
        return image
    from PIL import Image

    f = size / min(h, w)
    out = [np.asarray(Image.fromarray(image[..., c]).resize(
        (max(size, round(w * f)), max(size, round(h * f))), Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(out, -1), 0, 1).astype(np.float32)


class PairSampler:
    """Random crops of references, each distorted at two levels of one random type.

    Args:
        images: reference images, float32 RGB; each at least ``MIN_SIZE`` per side.
        kinds: distortion names (KADID and/or domain degradations).
        crop: crop side in pixels (>= MIN_SIZE).
        batch_size: references per batch.
    """

    def __init__(self, images: Sequence[np.ndarray], kinds: Sequence[str], crop: int,
                 batch_size: int, group: int = 1) -> None:
        from cdiqa.model.distortions import distortion_type

        if crop < MIN_SIZE:
            raise ConfigError(describe("Crop", "argument", "crop", crop, f">= {MIN_SIZE}",
                                       "Use larger crops"))
        if not images or not kinds:
            what = "images" if not images else "kinds"
            raise ConfigError(describe("Training set", "argument", what, "nothing",
                                       "at least one", f"Pass {what} to train on"))
        if group < 1 or batch_size % group:
            raise ConfigError(describe("Group", "argument", "group", group,
                                       f"a divisor of the batch size {batch_size}",
                                       "Pick a group size that divides the batch"))
        self.images = [_fit_to(np.asarray(im, np.float32), crop) for im in images]
        self.types = [distortion_type(k) for k in kinds]
        self.crop, self.batch_size, self.group = crop, batch_size, group

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        img = self.images[rng.integers(len(self.images))]
        h, w = img.shape[:2]
        y, x = rng.integers(h - self.crop + 1), rng.integers(w - self.crop + 1)
        out = img[y: y + self.crop, x: x + self.crop]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def batch(self, seed: int) -> Batch:
        """The batch of one seed (same seed, same bytes).

        Consecutive runs of ``group`` samples share one (type, levels, noise seed) on
        different crops.
        """
        from cdiqa.model.distortions import distort

        rng = np.random.default_rng(seed)
        refs, lo, hi, valid, kinds, levels = [], [], [], [], [], []
        for _ in range(self.batch_size // self.group):
            t = self.types[rng.integers(len(self.types))]
            pairs = t.severity_pairs()
            a, b = pairs[rng.integers(len(pairs))]
            s = int(rng.integers(2 ** 62))
            for _ in range(self.group):
                ref = self._crop(rng)
                # one seed for both levels: random distortions draw the same noise pattern,
                # so the stronger level differs from the milder only in strength
                d_lo, d_hi = distort(ref, t, a, seed=s), distort(ref, t, b, seed=s)
                refs.append(ref)
                lo.append(d_lo)
                hi.append(d_hi)
                valid.append(not np.array_equal(d_lo, d_hi))
                kinds.append(t.name)
                levels.append((a, b))
        chw = lambda xs: np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2))  # noqa: E731
        return Batch(chw(refs), chw(lo), chw(hi), np.array(valid), tuple(kinds), tuple(levels))
