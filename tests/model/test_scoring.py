"""Scoring pairs with a torch model and a head: library, CLI (CliRunner) and subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402
from cdiqa.errors import ConfigError, ImageError  # noqa: E402
from cdiqa.heads import read_head, write_head  # noqa: E402
from cdiqa.images import save_image  # noqa: E402
from cdiqa.model import scoring  # noqa: E402
from cdiqa.model.fit_heads import fit_label_free  # noqa: E402
from cdiqa.model.network import CDIQA, ModelConfig  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a head fitted on its features, and a few 96 px image files."""
    from skimage import data

    root = tmp_path_factory.mktemp("scoring")
    torch.manual_seed(0)
    model = CDIQA(ModelConfig(channels=(8, 8, 8, 8), stem_channels=8)).eval()
    ckpt = root / "model.pt"
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    ref = data.astronaut()[100:196, 150:246].astype(np.float32) / 255
    paths = {"ref": root / "ref.png"}
    save_image(paths["ref"], ref)
    for i, sigma in enumerate((0.02, 0.08, 0.2)):
        paths[f"d{i}"] = root / f"d{i}.png"
        save_image(paths[f"d{i}"], np.clip(ref + rng.normal(0, sigma, ref.shape), 0, 1))
    pairs = [scoring.load_pair(paths["ref"], paths[f"d{i}"]) for i in range(3)]
    head = fit_label_free(scoring.pair_features(model, pairs))
    write_head(head, root / "head.json")
    return {"root": root, "ckpt": ckpt, "head": root / "head.json", **paths}


def _opts(files) -> list[str]:
    return ["--checkpoint", str(files["ckpt"]), "--head", str(files["head"])]


def test_identical_pair_scores_exactly_one_and_noise_scores_lower(files):
    same = scoring.score_pair(files["ref"], files["ref"], files["ckpt"], files["head"])
    assert same == 1.0
    q = [scoring.score_pair(files["ref"], files[f"d{i}"], files["ckpt"], files["head"])
         for i in range(3)]
    assert 1.0 > q[0] > q[1] > q[2] >= 0.0


def test_cli_score_prints_the_score_and_json(files):
    res = runner.invoke(app, ["score", str(files["ref"]), str(files["d1"]), *_opts(files)])
    assert res.exit_code == 0, res.output
    q = float(res.stdout.strip())  # stdout only: stderr has the torch note
    assert 0 <= q < 1
    res = runner.invoke(app, ["score", str(files["ref"]), str(files["d1"]), "--json",
                              *_opts(files)])
    assert json.loads(res.stdout)["score"] == pytest.approx(q, abs=1e-6)


def test_cli_score_pairs_file_keeps_columns_and_adds_score(files, tmp_path):
    src = tmp_path / "pairs.csv"
    rows = [{"ref_path": str(files["ref"]), "dist_path": str(files[k]), "note": k}
            for k in ("ref", "d0", "d2")]
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, ["ref_path", "dist_path", "note"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "scored.csv"
    res = runner.invoke(app, ["score", "--pairs", str(src), "--out", str(out), *_opts(files)])
    assert res.exit_code == 0, res.output
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["note"] for r in got] == ["ref", "d0", "d2"]
    scores = [float(r["score"]) for r in got]
    assert scores[0] == 1.0 and scores[0] > scores[1] > scores[2]


def test_relative_paths_in_a_pairs_file_resolve_against_its_folder(files):
    src = files["root"] / "rel.csv"
    src.write_text("ref_path,dist_path\nref.png,d1.png\n")
    pairs = scoring.read_pairs_file(src)
    assert pairs.paths() == [(files["ref"], files["d1"])]


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"),
    ("corrupt", "cannot be read"),
    ("size", "Size for image"),
    ("small", "at least 64x64"),
    ("nan", "NaN or inf"),
])
def test_bad_inputs_raise_image_errors_naming_the_file(files, tmp_path, case, match):
    bad = tmp_path / f"{case}.tif"
    if case == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif case == "size":
        save_image(bad, np.zeros((96, 80, 3), np.float32))
    elif case == "small":
        save_image(files["root"] / "small_ref.png", np.zeros((48, 48, 3), np.float32))
        save_image(bad, np.zeros((48, 48, 3), np.float32))
    elif case == "nan":
        from PIL import Image

        a = np.full((96, 96), np.nan, np.float32)
        Image.fromarray(a, mode="F").save(bad)
    ref = files["root"] / "small_ref.png" if case == "small" else files["ref"]
    with pytest.raises(ImageError, match=match) as err:
        scoring.score_pair(ref, bad, files["ckpt"], files["head"])
    assert str(bad.name) in str(err.value) or case == "small"


def test_subprocess_bad_file_exits_1_with_one_line(files, tmp_path):
    missing = tmp_path / "nope.png"
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "score", str(files["ref"]),
                           str(missing), *_opts(files)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()  # the torch note, then the error: one line each
    assert len(lines) == 2 and lines[0].startswith("note: --checkpoint/--head score through "
                                                   "torch")
    assert "nope.png" in lines[1] and lines[1].startswith("error:")


def test_subprocess_scores_a_pair(files):
    proc = subprocess.run([sys.executable, "-m", "cdiqa.cli", "score", str(files["ref"]),
                           str(files["ref"]), "--json", *_opts(files)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["score"] == 1.0


def test_score_needs_a_pair_or_a_pairs_file(files):
    res = runner.invoke(app, ["score", str(files["ref"]), *_opts(files)])
    assert isinstance(res.exception, ConfigError)
    res = runner.invoke(app, ["score", "--pairs", "x.csv", *_opts(files)])
    assert isinstance(res.exception, ConfigError) and "--out" in str(res.exception)


def test_pairs_file_without_the_required_columns_is_rejected(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("reference,distorted\na.png,b.png\n")
    with pytest.raises(ConfigError, match="ref_path"):
        scoring.read_pairs_file(bad)


@pytest.mark.parametrize("kind", ["label-free", "few-shot"])
def test_cli_fit_head_writes_a_loadable_head(files, tmp_path, kind):
    src = tmp_path / "pairs.csv"
    lines = ["ref_path,dist_path,score"]
    lines += [f"{files['ref']},{files[f'd{i}']},{s}" for i, s in enumerate((4.5, 3.0, 1.5))]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "head.json"
    res = runner.invoke(app, ["fit-head", "--kind", kind, "--pairs", str(src), "--out", str(out),
                              "--checkpoint", str(files["ckpt"])])
    assert res.exit_code == 0, res.output
    head = read_head(out)
    assert head.kind == kind.replace("-", "_")
    assert head.score(np.zeros((1, head.dim)))[0] == 1.0


def test_cli_fit_head_needs_scores_for_labelled_kinds(files, tmp_path):
    src = tmp_path / "pairs.csv"
    src.write_text(f"ref_path,dist_path\n{files['ref']},{files['d0']}\n")
    res = runner.invoke(app, ["fit-head", "--kind", "supervised", "--pairs", str(src), "--out",
                              str(tmp_path / "h.json"), "--checkpoint", str(files["ckpt"])])
    assert isinstance(res.exception, ConfigError) and "'score'" in str(res.exception)


def test_cli_distort_renders_a_pairs_file(files, tmp_path):
    res = runner.invoke(app, ["distort", str(files["ref"]), "--out", str(tmp_path / "set"),
                              "--kinds", "GBLUR,JPEG", "--levels", "1", "--levels", "4"])
    assert res.exit_code == 0, res.output
    pairs = scoring.read_pairs_file(tmp_path / "set" / "pairs.csv")
    assert len(pairs.rows) == 4
    assert {r["kind"] for r in pairs.rows} == {"GBLUR", "JPEG"}
    assert all(d.is_file() for _, d in pairs.paths())
