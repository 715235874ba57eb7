"""Scoring many pairs: a pairs CSV or two folders paired by name, one result per pair.

::

    pairs CSV ── jobs_from_csv ──────┐                        ┌─► PairResult(ref, dist, score)
                                     ├─► [PairJob] ─► score_each
    REF_DIR DIST_DIR ─ jobs_from_folders                      └─► PairResult(..., error)
                                                                        │
                                      CSV or JSON lines ◄── write_results

A pair that cannot be scored (a missing or corrupt file, sizes that differ, a distorted image
with no reference) becomes a result with an ``error`` and the run goes on. Pairs are loaded a
chunk at a time (a reference shared by consecutive rows is decoded once) and each chunk goes
to ``score_pairs`` in one call, so same-size pairs run as one batch.

Folder pairing rule: a distorted file belongs to the reference, in the same relative folder,
whose stem is the longest prefix of the distorted file's stem: ``ref/cat.png`` <->
``dist/cat_jpeg_3.png`` (and ``ref/cats.png`` <-> ``dist/cats_blur.png``, not ``cat``).

>>> from cdiqa.runtime import Scorer
>>> from cdiqa.runtime.batch import jobs_from_folders, score_each, write_results
>>> with Scorer.load() as scorer:                            # doctest: +SKIP
...     results = write_results("out.csv", score_each(scorer, jobs_from_folders("ref", "dist")))
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np

from cdiqa.errors import CdiqaError, ConfigError, describe
from cdiqa.files import atomic_write
from cdiqa.images import IMAGE_SUFFIXES, check_pair
from cdiqa.pairs import PAIR_COLUMNS, read_pairs_file
from cdiqa.runtime.backends import SessionOptions
from cdiqa.runtime.preprocess import image_from
from cdiqa.runtime.scorer import MAX_BATCH, Scorer
from cdiqa.runtime.tiling import DEFAULT_TILE

#: the fields of every result, first in every output row
RESULT_FIELDS = ("ref", "dist", "score", "error")
#: output formats, by the suffix of the file
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}

Pair = tuple[np.ndarray, np.ndarray]
Progress = Callable[[int, int], None]


class PairScorer(Protocol):
    """What ``score_each`` needs: qualities (N,) of N checked float32 (H, W, 3) pairs
    (``Scorer.score_pairs``), raising a ``CdiqaError`` for inputs it cannot score."""

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


@dataclass(frozen=True)
class PairJob:
    """One pair to score.

    Attributes:
        ref, dist: image paths (or anything ``preprocess.image_from`` takes); ``ref`` is None
            for a distorted image without a reference.
        columns: other columns of its source row, written back beside the result.
        error: why it cannot be scored, known before loading (no reference, empty path).
    """

    ref: object
    dist: object
    columns: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class PairResult:
    """The outcome of one pair: a score in [0, 1], or the error that prevented it."""

    ref: str
    dist: str
    score: float | None
    error: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    #: the error itself (``error`` is its message), for callers that re-raise it
    exception: CdiqaError | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """``ref, dist, score, error`` then the source's other columns (names that clash
        with a result field are dropped: an old ``score`` column is replaced)."""
        row = {"ref": self.ref, "dist": self.dist, "score": self.score, "error": self.error}
        return {**row, **{k: v for k, v in self.columns.items() if k not in row}}


def tile_option(value: int | None) -> int | None:
    """The ``--tile`` option as ``Scorer.tile``: None (not given) is ``DEFAULT_TILE``, 0 is
    never."""
    return DEFAULT_TILE if value is None else (value or None)


@dataclass(frozen=True)
class ScorerConfig:
    """How to open the runtime scorer of a batch; None means ``Scorer.load``'s default,
    except ``tile``, whose default is ``DEFAULT_TILE`` and whose None never tiles."""

    bundle: str | os.PathLike | None = None
    domain: str | None = None
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    tile: int | None = DEFAULT_TILE
    threads: int | None = None
    backend: str = "auto"
    device: str | None = None
    #: pixels per image (``cdiqa.images.pixel_budget``), checked from headers before decoding
    max_pixels: int | None = None

    def open(self) -> Scorer:
        """The scorer (close it, or use it as a context manager)."""
        return Scorer.load(self.bundle, self.backend, self.device, self.domain,
                           options=SessionOptions(threads=self.threads), tile=self.tile,
                           precision=self.precision, max_pixels=self.max_pixels)


@dataclass
class FunctionScorer:
    """A ``PairScorer`` from a function of loaded pairs, e.g. a torch model and its head."""

    score_pairs: Callable[[Sequence[Pair]], np.ndarray]

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "FunctionScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Plan:
    """The pairs of one scoring request and where they came from."""

    jobs: list[PairJob]
    mode: Literal["pair", "csv", "folders"]


# ---- where the pairs come from ---------------------------------------------------------------


def plan_jobs(ref: str | os.PathLike | None, dist: str | os.PathLike | None,
              pairs_csv: str | os.PathLike | None = None, *, recursive: bool = False) -> Plan:
    """The pairs of ``REF DIST`` (two images, or two folders) or of a pairs CSV."""
    usage = ConfigError("Arguments for score: expected REF DIST (two images, or two folders) "
                        "or --pairs CSV. Pass one of them.")
    if pairs_csv is not None:
        if ref is not None or dist is not None or recursive:
            raise usage
        return Plan(jobs_from_csv(pairs_csv), "csv")
    if ref is None or dist is None:
        raise usage
    folders = (Path(ref).is_dir(), Path(dist).is_dir())
    if all(folders):
        return Plan(jobs_from_folders(ref, dist, recursive=recursive), "folders")
    missing = [p for p in (ref, dist) if not Path(p).exists()]
    if any(folders) and missing:
        raise ConfigError(f"Folder '{missing[0]}' does not exist. Check the path.")
    if any(folders):
        raise ConfigError(describe("Arguments", "score", f"{ref} {dist}", "a folder and a file",
                                   "two image files or two folders",
                                   "Pass two images, or a folder of references and a folder "
                                   "of distorted images"))
    if recursive:
        raise ConfigError(describe("Option", "score", "--recursive", "two image files",
                                   "two folders", "Drop --recursive, or pass two folders"))
    return Plan([PairJob(Path(ref), Path(dist))], "pair")


def jobs_from_csv(path: str | os.PathLike) -> list[PairJob]:
    """One job per row of a pairs CSV (``cdiqa.pairs``); a row with an empty path is an error
    job, so it becomes an error row instead of stopping the file."""
    pairs = read_pairs_file(path)
    jobs = []
    for line, row, (ref, dist) in zip(map(pairs.line, range(len(pairs.rows))), pairs.rows,
                                      pairs.paths()):
        columns = {k: v for k, v in row.items() if k is not None and k not in PAIR_COLUMNS}
        empty = [c for c in PAIR_COLUMNS if not row.get(c)]
        error = describe("Paths", "pairs row", f"{pairs.path}:{line}", f"an empty {empty[0]}",
                         "an image path in ref_path and dist_path",
                         "Fill in both paths") if empty else None
        jobs.append(PairJob(ref if row.get("ref_path") else None,
                            dist if row.get("dist_path") else None, columns, error))
    return jobs


def jobs_from_folders(ref_dir: str | os.PathLike, dist_dir: str | os.PathLike, *,
                      recursive: bool = False) -> list[PairJob]:
    """One job per image of ``dist_dir`` (sorted), paired with its reference in ``ref_dir``.

    The reference is the image in the same relative folder whose stem is the longest prefix
    of the distorted image's stem (``cat.png`` <-> ``cat_jpeg_3.png``). A distorted image
    with no such reference, or with two of the same stem (``cat.png``, ``cat.jpg``), is an
    error job. ``recursive``: walk sub-folders of both, matching relative folders.
    """
    ref_dir, dist_dir = Path(ref_dir), Path(dist_dir)
    if ref_dir.resolve() == dist_dir.resolve():
        raise ConfigError(describe("Folders", "score", dist_dir, "the reference folder itself",
                                   "a folder of distorted images apart from the references",
                                   "Put references and distorted images in two folders"))
    refs: dict[Path, dict[str, list[Path]]] = {}
    for rel in _images(ref_dir, recursive):
        refs.setdefault(rel.parent, {}).setdefault(rel.stem, []).append(rel)
    jobs = []
    for rel in _images(dist_dir, recursive):
        stems = refs.get(rel.parent, {})
        best = max((s for s in stems if rel.stem.startswith(s)), key=len, default=None)
        dist, error = dist_dir / rel, None
        if best is None:
            error = describe("Reference", "distorted image", dist,
                             f"no image in '{ref_dir / rel.parent}' whose stem is a prefix "
                             f"of '{rel.stem}'", "one reference",
                             "Name each distorted image after its reference: cat.png -> "
                             "cat_jpeg_3.png")
        elif len(stems[best]) > 1:
            names = ", ".join(p.name for p in stems[best])
            error = describe("Reference", "distorted image", dist,
                             f"{len(stems[best])} references with stem '{best}' ({names})",
                             "one", "Keep one reference per name")
        jobs.append(PairJob(ref_dir / stems[best][0] if best else None, dist, {}, error))
    return jobs


def _images(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder`` as sorted relative paths (hidden ones skipped)."""
    if not folder.is_dir():
        raise ConfigError(f"Folder '{folder}' does not exist. Check the path.")
    found = folder.rglob("*") if recursive else folder.iterdir()
    rels = sorted(p.relative_to(folder) for p in found
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    rels = [r for r in rels if not any(part.startswith(".") for part in r.parts)]
    if not rels:
        raise ConfigError(describe("Images", "folder", folder, "none",
                                   f"image files ({', '.join(IMAGE_SUFFIXES)})",
                                   "Check the folder" if recursive else
                                   "Check the folder, or add --recursive for sub-folders"))
    return rels


# ---- scoring -----------------------------------------------------------------------------------


def score_each(scorer: PairScorer, jobs: Sequence[PairJob], *, chunk: int = MAX_BATCH,
               progress: Progress | None = None) -> Iterator[PairResult]:
    """Score ``jobs`` in order, ``chunk`` pairs per ``scorer.score_pairs`` call; yields one
    result per job, with an ``error`` instead of a score for a pair that cannot be scored.

    Only ``CdiqaError`` (bad input) becomes an error row; anything else is a bug and raises.
    ``progress(done, total)`` is called after each result.
    """
    loader = _Loader(getattr(scorer, "max_pixels", None))
    for start in range(0, len(jobs), max(1, chunk)):
        block = jobs[start:start + max(1, chunk)]
        loaded = [loader.load(job, start + i) for i, job in enumerate(block)]
        scores = iter(_scores(scorer, [x for x in loaded if not isinstance(x, CdiqaError)]))
        for i, (job, item) in enumerate(zip(block, loaded)):
            outcome = item if isinstance(item, CdiqaError) else next(scores)
            yield _result(job, start + i, outcome)
            if progress is not None:
                progress(start + i + 1, len(jobs))


def _scores(scorer: PairScorer, pairs: list[Pair]) -> list[float | CdiqaError]:
    """Scores of ``pairs``, or per pair the error; a chunk that fails is retried pair by pair,
    so one bad pair does not take its batch neighbours with it."""
    if not pairs:
        return []
    try:
        return [float(s) for s in scorer.score_pairs(pairs)]
    except CdiqaError as exc:
        if len(pairs) == 1:
            return [exc]
        return [s for p in pairs for s in _scores(scorer, [p])]


class _Loader:
    """Loads and checks pairs, keeping the last reference (rows are grouped by reference in
    practice): its pixels, or the error that loading it gave."""

    def __init__(self, max_pixels: int | None = None) -> None:
        self.max_pixels = max_pixels
        self._key: str | None = None
        self._ref: np.ndarray | CdiqaError | None = None

    def load(self, job: PairJob, index: int) -> Pair | CdiqaError:
        if job.error is not None:
            return ConfigError(job.error)
        ref_name, dist_name = _name(job.ref, "ref", index), _name(job.dist, "dist", index)
        try:
            ref = self._reference(job.ref, ref_name)
            dist = image_from(job.dist, dist_name, self.max_pixels)
            check_pair(ref, dist, ref_name, dist_name)
        except CdiqaError as exc:
            return exc
        return ref, dist

    def _reference(self, ref, name: str) -> np.ndarray:
        key = os.fspath(ref) if isinstance(ref, (str, os.PathLike)) else None
        if key is None or key != self._key:
            self._key = key
            try:
                self._ref = image_from(ref, name, self.max_pixels)
            except CdiqaError as exc:
                self._ref = exc
        if isinstance(self._ref, CdiqaError):
            raise self._ref
        return self._ref


def _name(image, role: str, index: int) -> str:
    if image is None:
        return ""
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"{role}[{index}]"


def _result(job: PairJob, index: int, outcome: float | CdiqaError) -> PairResult:
    ref, dist = _name(job.ref, "ref", index), _name(job.dist, "dist", index)
    if isinstance(outcome, CdiqaError):
        return PairResult(ref, dist, None, str(outcome), job.columns, outcome)
    return PairResult(ref, dist, outcome, None, job.columns)


# ---- output ------------------------------------------------------------------------------------


def output_format(path: str | os.PathLike) -> str:
    """"csv" or "jsonl", from the suffix of ``path`` (ConfigError for any other)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(describe("Suffix", "output file", path, repr(suffix),
                                   " or ".join(repr(s) for s in FORMATS),
                                   "Name it OUT.csv or OUT.jsonl"))
    return FORMATS[suffix]


def write_results(path: str | os.PathLike | None,
                  results: Iterable[PairResult]) -> list[PairResult]:
    """Write ``results`` as they come to ``path`` (CSV or JSON lines, by its suffix: one row
    per pair, ``RESULT_FIELDS`` first), atomically; returns them. ``path`` None: only
    collects them. The suffix is checked before the first result is drawn."""
    if path is None:
        return list(results)
    fmt, kept = output_format(path), []

    def write(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = None
        for r in results:
            kept.append(r)
            row = r.to_dict()
            if fmt == "jsonl":
                text.write(json.dumps(row) + "\n")
                continue
            if writer is None:
                writer = csv.DictWriter(text, fieldnames=list(row), lineterminator="\n",
                                        restval="", extrasaction="ignore")
                writer.writeheader()
            writer.writerow({**row, "score": "" if r.score is None else repr(r.score),
                             "error": r.error or ""})
        if writer is None and fmt == "csv":
            text.write(",".join(RESULT_FIELDS) + "\n")
        text.flush()
        text.detach()

    atomic_write(path, write)
    return kept
