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
    """A pairs CSV: every row as read (all columns), plus the resolved image paths."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[dict, ...]

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
        for line, r in enumerate(self.rows, start=2):
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
        ConfigError: the file is missing, lacks a required column or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Pairs file '{path}' does not exist. Check the path.")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        rows = tuple(reader)
    missing = [c for c in PAIR_COLUMNS if c not in header]
    if missing:
        raise ConfigError(describe("Columns", "pairs file", path, list(header),
                                   f"at least {list(PAIR_COLUMNS)}", f"Add {missing}"))
    if not rows:
        raise ConfigError(describe("Rows", "pairs file", path, 0, "at least one pair",
                                   "List the image pairs to score"))
    return PairsFile(path, header, rows)
