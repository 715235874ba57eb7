"""Pairs CSVs (cdiqa.pairs): rows, the lines they are on, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdiqa.errors import ConfigError
from cdiqa.pairs import read_pairs_file


def _csv(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_bytes(data)
    return path


def test_rows_know_their_line_past_blank_lines_and_quoted_breaks(tmp_path) -> None:
    path = _csv(tmp_path, b'ref_path,dist_path,score\n\na.png,b.png,1\n\n"c\nd.png",e.png,x\n'
                          b"f.png\n")
    pairs = read_pairs_file(path)
    assert pairs.lines == (3, 6, 7)
    assert pairs.rows[2] == {"ref_path": "f.png", "dist_path": None, "score": None}
    with pytest.raises(ConfigError, match=rf"Value for pairs file '{path}:6': got 'x'"):
        pairs.scores()


def test_a_short_row_is_an_error_row_with_its_line(tmp_path) -> None:
    from cdiqa.runtime.batch import jobs_from_csv

    path = _csv(tmp_path, b"ref_path,dist_path\na.png,b.png\n\nc.png\n")
    jobs = jobs_from_csv(path)
    assert jobs[0].error is None
    assert jobs[1].error.startswith(f"Paths for pairs row '{path}:4': got an empty dist_path")


def test_a_utf8_bom_is_not_part_of_the_header(tmp_path) -> None:
    pairs = read_pairs_file(_csv(tmp_path, b"\xef\xbb\xbfref_path,dist_path\na.png,b.png\n"))
    assert pairs.header == ("ref_path", "dist_path")


@pytest.mark.parametrize("data, message", [
    (b"ref_path,dist_path\na.png,b.png\n\xff\xfe.png,c.png\n",
     r"Encoding for pairs file '.*pairs\.csv:3': got byte b'\\xff', expected UTF-8 text\. "
     r"Save the CSV as UTF-8"),
    (b'ref_path,dist_path\na.png,b.png\n"' + b"x" * 200_000 + b",c.png\n",
     r"CSV for pairs file '.*pairs\.csv:3': got field larger than field limit"),
])
def test_unreadable_files_are_config_errors_naming_the_line(tmp_path, data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        read_pairs_file(_csv(tmp_path, data))


def test_cli_exits_1_on_a_file_that_is_not_utf8(tmp_path) -> None:
    path = _csv(tmp_path, b"ref_path,dist_path\n\xff.png,b.png\n")
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "score", "--pairs", str(path),
                           "--out", str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr  # was 2: a UnicodeDecodeError traceback
    assert f"error: Encoding for pairs file '{path}:2'" in proc.stderr
