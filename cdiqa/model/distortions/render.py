"""Render distorted copies of reference images and the ``pairs.csv`` that lists them.

``pairs.csv`` has one row per distorted image::

    ref_path,dist_path,kind,level,seed
    ../refs/boat.png,boat__JPEG__L3.png,JPEG,3,2230623770557118693

Paths are relative to the folder that holds ``pairs.csv`` (POSIX separators), unless no
relative path exists (another drive), then absolute; ``read_pairs`` resolves them against that
folder, so the folder can be moved or shared as long as the references keep their place
relative to it. ``seed`` is the pair's own seed (see ``pair_seed``): ``distort(load_image(ref),
kind, level, seed=seed)`` reproduces the row's image exactly, before its 8-bit rounding.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from cdiqa.errors import ConfigError, describe
from cdiqa.files import atomic_write
from cdiqa.images import load_image, save_image
from cdiqa.model.distortions._util import LEVELS, check_level, check_seed
from cdiqa.model.distortions.lookup import distort, distortion_type

#: The columns of ``pairs.csv``, in order.
PAIRS_COLUMNS = ("ref_path", "dist_path", "kind", "level", "seed")

#: ``progress(done, total)``, called after each image is written.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pair:
    """One row of ``pairs.csv`` with its paths resolved."""

    ref_path: Path
    dist_path: Path
    kind: str
    level: int
    seed: int


def pair_seed(seed: int, ref_name: str, kind: str, level: int) -> int:
    """A stable 63-bit seed for one (reference, kind, level), derived from the run's seed.

    SHA-256 of the four values, so it is the same on every machine and Python version
    (unlike ``hash()``), and pairs of one run draw independent noise.

    >>> pair_seed(0, "boat.png", "AWGN", 3) == pair_seed(0, "boat.png", "AWGN", 3)
    True
    """
    msg = "\0".join(["cdiqa.distortions", str(int(seed)), ref_name, kind, str(int(level))])
    return int.from_bytes(hashlib.sha256(msg.encode()).digest()[:8], "big") >> 1


def render_set(refs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
               kinds: Iterable[str | int], levels: Iterable[int] = LEVELS, seed: int,
               progress: Progress | None = None) -> Path:
    """Distort every reference with every kind at every level; write PNGs and ``pairs.csv``.

    Files are named ``<ref stem>__<kind>__L<level>.png`` and written atomically (temp file,
    then rename), the CSV last, so a crash never leaves a CSV that lists missing images.

    Args:
        refs: reference image files (any format ``cdiqa.images.load_image`` reads), with
            distinct file stems.
        out_dir: folder for the images and ``pairs.csv`` (created if missing).
        kinds: distortion names or KADID ids (see ``distortion_type``).
        levels: levels to render, each 1..5.
        seed: the run's seed; each pair gets ``pair_seed(seed, ref file name, kind, level)``.
        progress: optional ``progress(done, total)`` callback.

    Returns:
        The path of ``pairs.csv``.

    Raises:
        ConfigError: no refs or kinds, duplicate reference stems, unknown kind, bad level.
        ImageError: a reference cannot be read.
    """
    types = list({t.name: t for t in map(distortion_type, kinds)}.values())
    levels = sorted({check_level(lv, "levels", "argument") for lv in levels})
    seed = check_seed(seed)
    refs = [Path(r) for r in refs]
    _check_inputs(refs, types, levels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, total = [], len(refs) * len(types) * len(levels)
    for ref in refs:
        image = load_image(ref)
        for dtype in types:
            for lv in levels:
                s = pair_seed(seed, ref.name, dtype.name, lv)
                name = f"{ref.stem}__{dtype.name}__L{lv}.png"
                save_image(out_dir / name, distort(image, dtype, lv, seed=s))
                rows.append((_relative(ref, out_dir), name, dtype.name, lv, s))
                if progress is not None:
                    progress(len(rows), total)
    return _write_csv(out_dir / "pairs.csv", rows)


def _check_inputs(refs: list[Path], types: list, levels: list[int]) -> None:
    if not refs:
        raise ConfigError(describe("References", "argument", "refs", "an empty list",
                                   "at least one image file", "Pass reference images"))
    if not types or not levels:
        what = "kinds" if not types else "levels"
        raise ConfigError(describe("Selection", "argument", what, "nothing",
                                   "at least one entry", f"Pass one or more {what}"))
    seen: dict[str, Path] = {}
    for ref in refs:
        if ref.stem in seen:
            raise ConfigError(describe(
                "Reference name", "file", ref, f"the same stem as '{seen[ref.stem]}'",
                "distinct file stems", "Rename one: output names are built from the stem"))
        seen[ref.stem] = ref


def _relative(path: Path, folder: Path) -> str:
    try:
        return PurePath(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # no relative path between drives (Windows)
        return path.resolve().as_posix()


def _write_csv(path: Path, rows: list[tuple]) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(PAIRS_COLUMNS)
    writer.writerows(rows)
    return atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def read_pairs(csv_path: str | os.PathLike) -> list[Pair]:
    """Read a ``pairs.csv`` (as written by ``render_set``), resolving its relative paths.

    Raises:
        ConfigError: the file is missing, lacks a column (named in the message), or a row has
            an unknown kind, a level outside 1..5 or a bad seed (file and line named).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"Pairs file '{path}' does not exist. Check the path, or write it "
                          "with render_set.")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        missing = [c for c in PAIRS_COLUMNS if c not in header]
        if missing:
            raise ConfigError(describe(
                f"Missing column {', '.join(repr(c) for c in missing)}", "pairs file", path,
                f"columns {header}", f"columns {list(PAIRS_COLUMNS)}",
                "Add the column to the header, or write the file with render_set"))
        return [_pair(row, path, line) for line, row in enumerate(reader, start=2)]


def _pair(row: dict, path: Path, line: int) -> Pair:
    where = f"{path}:{line}"
    try:
        kind = distortion_type(row["kind"]).name
        level = check_level(_int(row["level"]), kind)
        seed = check_seed(_int(row["seed"]))
    except ConfigError as exc:
        raise ConfigError(f"Row {line} of pairs file '{path}': {exc}") from None
    if not row["ref_path"] or not row["dist_path"]:
        raise ConfigError(describe("Paths", "pairs row", where, "an empty path",
                                   "ref_path and dist_path", "Fill in both paths"))
    return Pair(_resolve(row["ref_path"], path.parent), _resolve(row["dist_path"], path.parent),
                kind, level, seed)


def _int(text: str | None) -> int | str | None:
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return text  # left for check_level/check_seed to report as given


def _resolve(text: str, folder: Path) -> Path:
    p = Path(text)
    return (p if p.is_absolute() else folder / p).resolve()
