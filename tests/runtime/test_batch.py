"""Batch scoring: pairs CSVs, folders paired by name, error rows, output files, and the CLI
(CliRunner for output, a real process for exit codes)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402
from cdiqa.errors import ConfigError, ShapeError  # noqa: E402
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.runtime.batch import (FunctionScorer, PairJob, jobs_from_csv,  # noqa: E402
                                 jobs_from_folders, plan_jobs, score_each, write_results)
from cdiqa.tolerances import tolerance  # noqa: E402

runner = CliRunner()
ATOL = tolerance("onnx_score").atol


def _png(path: Path, seed: int, like: Path | None = None, sigma: float = 0.0) -> Path:
    """A 96x128 RGB PNG: a smooth pattern, or ``like``'s pixels plus noise of ``sigma``."""
    rng = np.random.default_rng(seed)
    if like is None:
        y, x = np.mgrid[0:96, 0:128] / 128
        img = np.stack([x, y, 0.5 + 0.4 * np.sin((5 + seed) * 9 * x * y)], axis=2)
    else:
        img = np.asarray(Image.open(like), np.float64) / 255
        img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def scorer(tiny_bundle: Path) -> Scorer:
    return Scorer.load(tiny_bundle, backend="onnxruntime")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """ref/{cat,cats}.png and dist/ with two noisy copies of each, a file with no reference,
    a hidden file and a text file."""
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    for i, name in enumerate(("cat", "cats")):
        r = _png(ref / f"{name}.png", i)
        for level in (1, 2):
            _png(dist / f"{name}_noise_{level}.png", 10 * i + level, like=r, sigma=0.03 * level)
    _png(dist / "dog_blur.png", 7)
    _png(dist / ".hidden_cat.png", 8)
    (dist / "notes.txt").write_text("not an image")
    return ref, dist


def _by_dist(jobs) -> dict[str, PairJob]:
    return {Path(j.dist).name: j for j in jobs}


# ---- folder pairing ----------------------------------------------------------------------------


def test_folders_pair_each_distorted_image_with_its_longest_prefix_reference(folders) -> None:
    ref, dist = folders
    jobs = _by_dist(jobs_from_folders(ref, dist))
    assert sorted(jobs) == ["cat_noise_1.png", "cat_noise_2.png", "cats_noise_1.png",
                            "cats_noise_2.png", "dog_blur.png"]  # hidden and .txt skipped
    assert jobs["cat_noise_1.png"].ref == ref / "cat.png"
    assert jobs["cats_noise_2.png"].ref == ref / "cats.png"  # 'cats', not the shorter 'cat'
    assert jobs["dog_blur.png"].ref is None
    assert jobs["dog_blur.png"].error.startswith(
        f"Reference for distorted image '{dist / 'dog_blur.png'}': got no image in '{ref}' "
        "whose stem is a prefix of 'dog_blur'")


def test_two_references_of_one_stem_are_an_error_row(folders) -> None:
    ref, dist = folders
    _png(ref / "cat.jpg", 3)
    job = _by_dist(jobs_from_folders(ref, dist))["cat_noise_1.png"]
    assert "2 references with stem 'cat' (cat.jpg, cat.png)" in job.error


def test_recursive_folders_match_relative_paths(folders) -> None:
    ref, dist = folders
    _png(ref / "sub" / "owl.png", 4)
    _png(dist / "sub" / "owl_jpeg_3.png", 5)
    _png(dist / "sub" / "cat_jpeg_1.png", 6)  # cat.png is at the top, not in sub/
    assert "owl_jpeg_3.png" not in _by_dist(jobs_from_folders(ref, dist))
    jobs = _by_dist(jobs_from_folders(ref, dist, recursive=True))
    assert jobs["owl_jpeg_3.png"].ref == ref / "sub" / "owl.png"
    assert jobs["cat_jpeg_1.png"].ref is None and "in '" + str(ref / "sub") in \
        jobs["cat_jpeg_1.png"].error
    assert jobs["cat_noise_1.png"].ref == ref / "cat.png"


def test_bad_folder_arguments_are_config_errors(folders, tmp_path) -> None:
    ref, dist = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="Images for folder .*empty.*add --recursive"):
        jobs_from_folders(ref, tmp_path / "empty")
    with pytest.raises(ConfigError, match="the reference folder itself"):
        jobs_from_folders(ref, ref)
    with pytest.raises(ConfigError, match="got a folder and a file"):
        plan_jobs(ref, dist / "cat_noise_1.png")
    with pytest.raises(ConfigError, match=r"^Folder '.*nowhere' does not exist\. Check the path"):
        plan_jobs(ref, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--recursive"):
        plan_jobs(ref / "cat.png", dist / "cat_noise_1.png", recursive=True)
    with pytest.raises(ConfigError, match="expected REF DIST"):
        plan_jobs(ref, None)
    assert plan_jobs(ref, dist).mode == "folders"


# ---- scoring -----------------------------------------------------------------------------------


def test_batched_scores_equal_single_pair_scores(scorer, folders) -> None:
    ref, dist = folders
    jobs = [j for j in jobs_from_folders(ref, dist) if j.error is None]
    batched = [r.score for r in score_each(scorer, jobs, chunk=8)]
    single = [scorer.score(j.ref, j.dist) for j in jobs]
    np.testing.assert_allclose(batched, single, rtol=0, atol=ATOL)
    assert all(0 <= s < 1 for s in batched)


def test_one_bad_pair_is_an_error_row_and_the_others_are_scored(scorer, folders,
                                                               tmp_path) -> None:
    ref, dist = folders
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.new("RGB", (100, 96)).save(tmp_path / "wide.png")
    jobs = [PairJob(ref / "cat.png", dist / "cat_noise_1.png"),
            PairJob(ref / "cat.png", tmp_path / "broken.png"),
            PairJob(ref / "cat.png", tmp_path / "missing.png"),
            PairJob(ref / "cat.png", tmp_path / "wide.png"),
            PairJob(ref / "cats.png", dist / "cats_noise_1.png", {"note": "last"})]
    seen = []
    results = list(score_each(scorer, jobs, progress=lambda i, n: seen.append((i, n))))
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert "broken.png' cannot be read" in results[1].error and results[1].score is None
    assert results[2].error == f"Image file '{tmp_path / 'missing.png'}' does not exist. " \
                               "Check the path."
    assert "Size for image" in results[3].error
    assert results[4].columns == {"note": "last"} and results[4].dist == str(
        dist / "cats_noise_1.png")
    assert seen == [(i, 5) for i in range(1, 6)]


def test_a_chunk_the_scorer_refuses_is_retried_pair_by_pair(natural_image) -> None:
    calls = []

    def score_pairs(pairs):
        calls.append(len(pairs))
        if any(r[0, 0, 0] == 0 for r, _ in pairs):
            raise ShapeError("Values for image 'black': got 0, expected light. Brighten it.")
        return np.full(len(pairs), 0.5)

    black = np.zeros_like(natural_image)
    jobs = [PairJob(natural_image + 0.0, natural_image), PairJob(black, black),
            PairJob(natural_image + 0.0, natural_image)]
    results = list(score_each(FunctionScorer(score_pairs), jobs))
    assert [r.score for r in results] == [0.5, None, 0.5]
    assert results[1].error.startswith("Values for image 'black'")
    assert results[1].ref == "ref[1]" and isinstance(results[1].exception, ShapeError)
    assert calls == [3, 1, 1, 1]


def test_a_bug_in_the_scorer_is_raised_not_written_as_a_row(natural_image) -> None:
    def broken(pairs):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        list(score_each(FunctionScorer(broken), [PairJob(natural_image, natural_image)]))


# ---- pairs files and output ------------------------------------------------------------------


def _pairs_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_pairs_csv_rows_keep_their_columns_and_empty_paths_are_error_rows(folders) -> None:
    ref, dist = folders
    src = _pairs_csv(ref.parent / "pairs.csv", [
        {"ref_path": "ref/cat.png", "dist_path": "dist/cat_noise_1.png", "kind": "noise"},
        {"ref_path": "", "dist_path": "dist/cat_noise_2.png", "kind": "noise"}])
    jobs = jobs_from_csv(src)
    assert jobs[0].ref == ref / "cat.png" and jobs[0].columns == {"kind": "noise"}
    assert jobs[1].ref is None and jobs[1].error == (
        f"Paths for pairs row '{src}:3': got an empty ref_path, expected an image path in "
        "ref_path and dist_path. Fill in both paths.")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_results_are_written_one_row_per_pair(scorer, folders, tmp_path, suffix) -> None:
    ref, dist = folders
    jobs = [PairJob(ref / "cat.png", dist / "cat_noise_1.png", {"kind": "n", "score": "9"}),
            PairJob(ref / "cat.png", dist / "missing.png", {"kind": "m", "score": "9"})]
    out = tmp_path / f"out{suffix}"
    results = write_results(out, score_each(scorer, jobs))
    if suffix == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["ref", "dist", "score", "error", "kind"]
        assert float(rows[0]["score"]) == results[0].score and rows[0]["error"] == ""
        assert rows[1]["score"] == "" and "missing.png" in rows[1]["error"]
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows[0] == {"ref": str(ref / "cat.png"), "dist": str(dist / "cat_noise_1.png"),
                           "score": results[0].score, "error": None, "kind": "n"}
        assert rows[1]["score"] is None and "missing.png" in rows[1]["error"]


def test_an_unknown_output_suffix_is_refused_before_scoring(tmp_path) -> None:
    def never(_):
        raise AssertionError("scored")

    with pytest.raises(ConfigError, match="Suffix for output file .*'.txt'.*OUT.jsonl"):
        write_results(tmp_path / "out.txt", (never(x) for x in [1]))
    assert not (tmp_path / "out.txt").exists()


# ---- the CLI (the bundled default model) -------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdiqa.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_pairs_with_one_unreadable_row_scores_the_rest_and_exits_1(folders,
                                                                      tmp_path) -> None:
    ref, dist = folders
    (dist / "broken.png").write_bytes(b"not a png")
    rows = [{"ref_path": "ref/cat.png", "dist_path": f"dist/{d}.png"} for d in
            ("cat_noise_1", "cat_noise_2", "broken", "cat_noise_2")]
    src = _pairs_csv(ref.parent / "pairs.csv", rows)
    out = tmp_path / "scored.csv"
    proc = _cli("score", "--pairs", src, "--out", out)
    assert proc.returncode == 1, proc.stderr
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert [bool(r["score"]) for r in got] == [True, True, False, True]
    assert "broken.png' cannot be read" in got[2]["error"]
    assert f"wrote {out} (3 of 4 pairs scored, 1 failed)" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "Traceback" not in proc.stderr
    single = _cli("score", ref / "cat.png", dist / "cat_noise_2.png", "--json")
    assert single.returncode == 0, single.stderr  # the same engine: the same score
    assert abs(json.loads(single.stdout)["score"] - float(got[1]["score"])) <= ATOL
    assert got[1]["score"] == got[3]["score"]


def test_cli_folders_json_lists_every_pair_and_exits_1_for_a_missing_reference(folders) -> None:
    ref, dist = folders
    res = runner.invoke(app, ["score", str(ref), str(dist), "--json"])
    assert res.exit_code == 1
    rows = json.loads(res.stdout)
    assert [Path(r["dist"]).name for r in rows] == ["cat_noise_1.png", "cat_noise_2.png",
                                                   "cats_noise_1.png", "cats_noise_2.png",
                                                   "dog_blur.png"]
    assert rows[-1]["score"] is None and rows[-1]["ref"] == "" and "dog_blur" in rows[-1]["error"]
    assert all(0 <= r["score"] < 1 for r in rows[:4])
    with Scorer.load() as default:  # folder mode uses the bundled default, like a single pair
        assert abs(rows[0]["score"] - default.score(ref / "cat.png",
                                                    dist / "cat_noise_1.png")) <= ATOL
    (dist / "dog_blur.png").unlink()
    res = runner.invoke(app, ["score", str(ref), str(dist), "--out", str(ref.parent / "o.jsonl")])
    assert res.exit_code == 0, res.output
    assert len((ref.parent / "o.jsonl").read_text().splitlines()) == 4


def test_cli_many_pairs_need_an_output(folders) -> None:
    ref, dist = folders
    res = runner.invoke(app, ["score", str(ref), str(dist)])
    assert isinstance(res.exception, ConfigError) and "--out" in str(res.exception)
    res = runner.invoke(app, ["score", str(ref), str(dist), "--out", "x.txt"])
    assert isinstance(res.exception, ConfigError) and "'.txt'" in str(res.exception)


def test_cli_runtime_options_reach_the_scorer(folders, tiny_bundle) -> None:
    ref, dist = folders
    args = ["score", str(ref / "cat.png"), str(dist / "cat_noise_1.png"), "--json"]
    default = json.loads(runner.invoke(app, args).stdout)["score"]
    opts = ["--bundle", str(tiny_bundle), "--domain", "medical", "--threads", "1",
            "--tile", "64"]
    res = runner.invoke(app, args + opts)
    assert res.exit_code == 0, res.output
    with Scorer.load(tiny_bundle, domain="medical", tile=64) as scorer:
        expected = scorer.score(ref / "cat.png", dist / "cat_noise_1.png")
    assert abs(json.loads(res.stdout)["score"] - expected) <= ATOL
    assert json.loads(res.stdout)["score"] != default
    res = runner.invoke(app, args + ["--domain", "nowhere"])
    assert "Domain for bundle" in str(res.exception) and "got 'nowhere'" in str(res.exception)


def test_cli_batch_runs_where_torch_cannot_be_imported(folders, tmp_path) -> None:
    ref, dist = folders
    (dist / "dog_blur.png").unlink()
    code = ("import importlib.abc, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('blocked for this test')\n"
            "sys.meta_path.insert(0, Block())\n"
            "sys.argv = ['iqa-export', 'score', *sys.argv[1:]]\n"
            "from cdiqa.cli import main\n"
            "main()\n")
    out = tmp_path / "o.csv"
    proc = subprocess.run([sys.executable, "-c", code, str(ref), str(dist), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 5
    proc = subprocess.run([sys.executable, "-c", code, str(ref / "cat.png"),
                           str(dist / "cat_noise_1.png"), "--checkpoint", "model.pt"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "install 'cdiqa[train]'" in proc.stderr, proc.stderr
