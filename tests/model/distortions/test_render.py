"""render_set writes distorted PNGs and pairs.csv; read_pairs reads them back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import ConfigError
from cdiqa.images import load_image, save_image
from cdiqa.model.distortions import PAIRS_COLUMNS, distort, pair_seed, read_pairs, render_set


def _refs(folder: Path, n: int = 2) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        y, x = np.mgrid[0:72, 0:80] / 80
        img = np.stack([x, y, (x * y + 0.1 * i) % 1], axis=2)
        img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
        paths.append(folder / "refs" / f"ref{i}.png")
        save_image(paths[-1], img)
    return paths


def test_round_trip(tmp_path):
    refs = _refs(tmp_path)
    calls = []
    csv_path = render_set(refs, tmp_path / "out", kinds=["AWGN", "haze", 18], levels=(1, 3),
                          seed=5, progress=lambda done, total: calls.append((done, total)))
    assert csv_path == tmp_path / "out" / "pairs.csv"
    text = csv_path.read_text()
    assert text.splitlines()[0] == ",".join(PAIRS_COLUMNS)
    assert "../refs/ref0.png,ref0__AWGN__L1.png,AWGN,1," in text  # relative to the CSV folder
    pairs = read_pairs(csv_path)
    assert len(pairs) == 2 * 3 * 2 and calls[-1] == (12, 12) and len(calls) == 12
    assert {p.kind for p in pairs} == {"AWGN", "haze", "Mean_Shift"}
    for p in pairs:
        assert p.ref_path in [r.resolve() for r in refs] and p.dist_path.is_file()
        assert p.seed == pair_seed(5, p.ref_path.name, p.kind, p.level)
    # Each row's seed reproduces its image (up to the 8-bit rounding of the PNG).
    p = next(p for p in pairs if p.kind == "AWGN" and p.level == 3)
    again = distort(load_image(p.ref_path), p.kind, p.level, seed=p.seed)
    assert np.array_equal(np.rint(again * 255), np.rint(load_image(p.dist_path) * 255))


def test_same_seed_same_files_other_seed_other_noise(tmp_path):
    refs = _refs(tmp_path, 1)
    a = read_pairs(render_set(refs, tmp_path / "a", kinds=["AWGN"], levels=[2], seed=1))
    b = read_pairs(render_set(refs, tmp_path / "b", kinds=["AWGN"], levels=[2], seed=1))
    c = read_pairs(render_set(refs, tmp_path / "c", kinds=["AWGN"], levels=[2], seed=2))
    assert a[0].dist_path.read_bytes() == b[0].dist_path.read_bytes()
    assert a[0].dist_path.read_bytes() != c[0].dist_path.read_bytes()


def test_moved_folder_still_resolves(tmp_path):
    refs = _refs(tmp_path / "orig", 1)
    render_set(refs, tmp_path / "orig" / "out", kinds=["GBLUR"], levels=[1], seed=0)
    shutil.copytree(tmp_path / "orig", tmp_path / "moved")
    (pair,) = read_pairs(tmp_path / "moved" / "out" / "pairs.csv")
    assert pair.ref_path == (tmp_path / "moved" / "refs" / "ref0.png").resolve()
    assert pair.dist_path.is_file()


def test_pair_seed_is_stable_and_distinct():
    assert pair_seed(0, "boat.png", "AWGN", 3) == 8844318863787810911
    variants = {pair_seed(0, "boat.png", "AWGN", 3), pair_seed(1, "boat.png", "AWGN", 3),
                pair_seed(0, "bird.png", "AWGN", 3), pair_seed(0, "boat.png", "JPEG", 3),
                pair_seed(0, "boat.png", "AWGN", 4)}
    assert len(variants) == 5 and all(0 <= s < 2**63 for s in variants)


def test_unknown_kind_fails_before_writing(tmp_path):
    refs = _refs(tmp_path, 1)
    with pytest.raises(ConfigError, match=r"Did you mean 'haze'"):
        render_set(refs, tmp_path / "out", kinds=["AWGN", "hazy"], seed=0)
    assert not (tmp_path / "out").exists()


def test_duplicate_stems_and_bad_levels_are_config_errors(tmp_path):
    refs = _refs(tmp_path, 1)
    twin = tmp_path / "other" / "ref0.png"
    save_image(twin, load_image(refs[0]))
    with pytest.raises(ConfigError, match=r"Reference name for file .*ref0\.png"):
        render_set([refs[0], twin], tmp_path / "out", kinds=["AWGN"], seed=0)
    with pytest.raises(ConfigError,
                       match=r"Level for argument 'levels': got 7, expected an integer 1\.\.5"):
        render_set(refs, tmp_path / "out", kinds=["AWGN"], levels=[1, 7], seed=0)


def test_missing_column_names_the_file_and_the_column(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("ref_path,dist_path,level,seed\na.png,b.png,1,0\n")
    with pytest.raises(ConfigError, match=r"Missing column 'kind' for pairs file '.*pairs\.csv'"):
        read_pairs(bad)


def test_bad_row_names_the_line(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("ref_path,dist_path,kind,level,seed\na.png,b.png,JPEG,1,0\n"
                   "a.png,c.png,JPEG,9,0\n")
    with pytest.raises(ConfigError, match=r"Row 3 of pairs file '.*pairs\.csv': Level"):
        read_pairs(bad)


def test_missing_csv_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        read_pairs(tmp_path / "nope.csv")
