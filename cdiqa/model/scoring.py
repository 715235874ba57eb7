"""Scoring image pairs with a torch model and a quality head (until the runtime takes over).

::

    load_image(ref), load_image(dist) ──► check_pair ──► codes(ref), codes(dist) ──► v ──► head

Each image goes through the encoder on its own (batch of one): identical images then give
bitwise identical codes, v == 0 and the head's best score, 1.0. A reference shared by many
rows of a pairs file is encoded once.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from cdiqa.errors import ConfigError, describe
from cdiqa.heads import Head, read_head
from cdiqa.files import atomic_write
from cdiqa.images import check_pair, load_image
from cdiqa.model.masking import features_from_stats
from cdiqa.model.network import CDIQA, Codes, load_model
from cdiqa.pairs import PAIR_COLUMNS, PairsFile, read_pairs_file  # noqa: F401 (one reader)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "default"
DEFAULT_MODEL = ASSETS / "model.pt"
DEFAULT_HEAD = ASSETS / "head.json"
#: the columns a pairs file must have; any others are kept as they are

Progress = Callable[[int, int], None]


def resolve_model(path: str | os.PathLike | None = None) -> CDIQA:
    """Load ``path``, or the bundled default model when None."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise ConfigError(f"Checkpoint file '{path}' does not exist. Pass --checkpoint, or "
                          "build the default with scripts/make_default_model.sh.")
    try:
        return load_model(path)
    except (RuntimeError, KeyError, OSError, EOFError, ValueError) as exc:
        raise ConfigError(f"Checkpoint file '{path}' cannot be loaded: {str(exc)[:200]}. "
                          "Pass a file written by `iqa-export train`.") from None


def resolve_head(path: str | os.PathLike | None = None) -> Head:
    """Load ``path``, or the bundled default label-free head when None."""
    return read_head(Path(path) if path is not None else DEFAULT_HEAD)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


@torch.no_grad()
def image_codes(model: CDIQA, image: np.ndarray) -> Codes:
    """Codes of one float32 RGB (H, W, 3) image."""
    return model.codes(_tensor(image).to(next(model.parameters()).device))


@torch.no_grad()
def features_from_codes(model: CDIQA, ref: Codes, dist: Codes,
                        size: tuple[int, int]) -> np.ndarray:
    """v (2D,) float64 of one pair from its two images' codes."""
    v = features_from_stats(*model.stats_from_codes(ref, dist, None, size))
    return v[0].double().cpu().numpy()


def pair_features(model: CDIQA, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                  total: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """v (N, 2D) of (ref, dist) image pairs; consecutive pairs that share a ref reuse its codes.

    Images are float32 RGB (H, W, 3), as ``cdiqa.images.load_image`` returns them.
    """
    model.eval()
    out, last_ref, ref_codes = [], None, None
    for i, (ref, dist) in enumerate(pairs):
        if ref is not last_ref:
            last_ref, ref_codes = ref, image_codes(model, ref)
        out.append(features_from_codes(model, ref_codes, image_codes(model, dist),
                                       ref.shape[:2]))
        if progress is not None:
            progress(i + 1, total or 0)
    return np.stack(out) if out else np.zeros((0, model.feature_dim))


# ---- pairs files ----------------------------------------------------------------------------


def load_pair(ref_path: str | os.PathLike, dist_path: str | os.PathLike,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Both images, checked to be the same size and at least ``MIN_SIZE`` per side."""
    ref, dist = load_image(ref_path), load_image(dist_path)
    check_pair(ref, dist, str(ref_path), str(dist_path))
    return ref, dist


def _loaded_pairs(paths: Sequence[tuple[Path, Path]]):
    cache: dict[Path, np.ndarray] = {}
    for ref_path, dist_path in paths:
        if ref_path not in cache:
            cache.clear()  # rows are grouped by reference in practice: keep one
            cache[ref_path] = load_image(ref_path)
        ref, dist = cache[ref_path], load_image(dist_path)
        check_pair(ref, dist, str(ref_path), str(dist_path))
        yield ref, dist


def file_features(model: CDIQA, paths: Sequence[tuple[Path, Path]],
                  progress: Progress | None = None) -> np.ndarray:
    """v (N, 2D) of (ref, dist) image files."""
    return pair_features(model, _loaded_pairs(paths), len(paths), progress)


def score_pair(ref_path: str | os.PathLike, dist_path: str | os.PathLike,
               checkpoint: str | os.PathLike | None = None,
               head: str | os.PathLike | None = None) -> float:
    """Quality of one pair of image files in [0, 1] (higher is better).

    Raises:
        ImageError: a file is missing, unreadable or corrupt, the sizes differ, or an image
            is smaller than ``MIN_SIZE``.
    """
    model, q_head = resolve_model(checkpoint), resolve_head(head)
    v = pair_features(model, [load_pair(ref_path, dist_path)])
    return float(q_head.score(v)[0])


def score_file(pairs_csv: str | os.PathLike, out_csv: str | os.PathLike,
               checkpoint: str | os.PathLike | None = None,
               head: str | os.PathLike | None = None,
               progress: Progress | None = None) -> np.ndarray:
    """Score every row of a pairs CSV and write it to ``out_csv`` with a ``score`` column.

    All original columns are kept (an existing ``score`` column is replaced); the file is
    written atomically, only after every pair was scored. Returns the scores.
    """
    pairs = read_pairs_file(pairs_csv)
    model, q_head = resolve_model(checkpoint), resolve_head(head)
    scores = q_head.score(file_features(model, pairs.paths(), progress))
    header = list(pairs.header) + ([] if "score" in pairs.header else ["score"])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row, s in zip(pairs.rows, scores):
        writer.writerow({**row, "score": repr(float(s))})
    atomic_write(out_csv, lambda f: f.write(text.getvalue().encode("utf-8")))
    return scores
