"""Pairs files: a CSV listing (reference, distorted) image paths, one pair a row (stdlib + numpy).

::

    ref_path,dist_path[,score][,any other column]
    cat.png,cat_jpeg_3.png,0.71,...

Relative paths resolve against the CSV's folder. Every column is kept as read, so a scoring
run can write them back beside its results. This module imports no torch: the torch-free
runtime (``cdiqa.runtime.batch``) and the torch model (``cdiqa.model.scoring``) read the same
files through it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdiqa.errors import ConfigError, describe

#: the columns a pairs file must have; any others are kept as they are
PAIR_COLUMNS = ("ref_path", "dist_path")


@dataclass(frozen=True)
class PairsFile:
    """A pairs CSV: every row as read (all columns), plus the resolved image paths.

    ``lines``: the line of the file each row ends on (blank lines and quoted line breaks
    counted), for messages that point at a row.
    """

    path: Path
    header: tuple[str, ...]
    rows: tuple[dict, ...]
    lines: tuple[int, ...] = ()

    def line(self, index: int) -> int:
        """The file line of row ``index`` (0-based)."""
        return self.lines[index] if self.lines else index + 2

    def paths(self) -> list[tuple[Path, Path]]:
        """(ref, dist) per row, relative paths resolved against the CSV's folder."""
        base = self.path.parent
        return [(base / (r["ref_path"] or ""), base / (r["dist_path"] or ""))
                for r in self.rows]

    def scores(self, column: str = "score") -> np.ndarray:
        """The float ``column`` of every row (ConfigError naming the row if missing/bad)."""
        if column not in self.header:
            raise ConfigError(describe("Columns", "pairs file", self.path, list(self.header),
                                       f"a '{column}' column", "Add opinion scores to fit "
                                       "this head, or use --kind label-free"))
        out = []
        for i, r in enumerate(self.rows):
            line = self.line(i)
            try:
                out.append(float(r[column]))
            except (TypeError, ValueError):
                raise ConfigError(describe("Value", "pairs file", f"{self.path}:{line}",
                                           repr(r[column]), f"a number in '{column}'",
                                           "Fix the row")) from None
        scores = np.array(out)
        if not np.all(np.isfinite(scores)):
            raise ConfigError(describe("Values", "pairs file", self.path, "NaN or inf scores",
                                       "finite scores", "Fix the rows"))
        return scores


def read_pairs_file(path: str | os.PathLike) -> PairsFile:
    """Read a CSV with at least ``ref_path`` and ``dist_path`` columns (others are kept).

    Raises:
        ConfigError: the file is missing or not UTF-8 text, a row is not valid CSV, it lacks a
            required column or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"Pairs file '{path}' {state}. Check the path.")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 BOM
            reader = csv.DictReader(f)
            header = tuple(reader.fieldnames or ())
            for row in reader:
                rows.append(row)
                lines.append(reader.reader.line_num)  # the csv reader's: DictReader's lags
    except UnicodeDecodeError as exc:
        raise ConfigError(describe("Encoding", "pairs file", f"{path}:{_bad_line(path)}",
                                   f"byte {exc.object[exc.start:exc.start + 1]!r}", "UTF-8 text",
                                   "Save the CSV as UTF-8")) from None
    except csv.Error as exc:  # e.g. a field over csv's size limit (an unclosed quote)
        raise ConfigError(describe("CSV", "pairs file", f"{path}:{reader.reader.line_num}",
                                   str(exc), "one pair a row",
                                   "Fix the row (a stray quote?)")) from None
    missing = [c for c in PAIR_COLUMNS if c not in header]
    if missing:
        raise ConfigError(describe("Columns", "pairs file", path, list(header),
                                   f"at least {list(PAIR_COLUMNS)}", f"Add {missing}"))
    if not rows:
        raise ConfigError(describe("Rows", "pairs file", path, 0, "at least one pair",
                                   "List the image pairs to score"))
    return PairsFile(path, header, tuple(rows), tuple(lines))


def _bad_line(path: Path) -> int:
    """The first line of ``path`` that is not UTF-8 (only read again on that error)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
