"""`iqa-export eval --plot`: score vs level per type (cdiqa.model.plots) on a tiny dev set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cdiqa.cli import app  # noqa: E402
from cdiqa.model import plots  # noqa: E402
from cdiqa.model.evaluate import PairSet  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def devset(tmp_path_factory) -> Path:
    """The tiny development set of .ci/run's smoke step: one test and one tune reference,
    256 x 192, smooth gradients under a sine pattern."""
    folder = tmp_path_factory.mktemp("devset")
    y, x = np.mgrid[0:192, 0:256] / 256
    for i, split in enumerate(("test", "tune")):
        img = np.stack([x, y, 0.5 + 0.4 * np.sin((9 + 7 * i) * x * y * 6)], axis=2)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"{split}.png")
    records = [{"name": s, "split": s, "file": f"{s}.png"} for s in ("test", "tune")]
    (folder / "sources.json").write_text(json.dumps(records))
    return folder


def _pairs(n_refs: int = 2) -> PairSet:
    """Rows of 3 types x 5 levels per reference, as ``render_pairs`` lays them out."""
    kinds = ["JPEG", "GBLUR", "AWGN"]
    rows = [(r, k, lv) for r in range(n_refs) for k in kinds for lv in plots.LEVELS]
    return PairSet(refs=[None] * n_refs, ref_index=np.array([r for r, _, _ in rows]),
                   names=[f"r{i}" for i in range(n_refs)], kinds=[k for _, k, _ in rows],
                   levels=np.array([lv for _, _, lv in rows]),
                   mos=np.array([5.0 - lv * 0.5 for _, _, lv in rows]), dists=[None] * len(rows))


def test_level_curves_group_by_type_level_and_reference(tmp_path: Path) -> None:
    pairs = _pairs()
    score = 1 - pairs.levels / 10 + pairs.ref_index / 100
    curves = plots.level_curves(pairs, {"model": score, "HaarPSI": score / 2})
    assert curves.kinds == ("JPEG", "GBLUR", "AWGN")
    assert curves.categories == {"JPEG": "compression", "GBLUR": "blur", "AWGN": "noise"}
    for kind in curves.kinds:
        expected = (1 - np.array(plots.LEVELS) / 10)[:, None] + np.array([0, 0.01])
        np.testing.assert_array_equal(curves.scores["model"][kind], expected)
        np.testing.assert_array_equal(curves.mos[kind], 5.0 - np.array(plots.LEVELS) * 0.5)

    path = plots.plot_levels(curves, tmp_path / "levels.png", "synthetic")
    _check_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["levels.png"]  # no temp file left


def _check_png(path: Path) -> None:
    """A PNG that decodes, landscape, with something drawn on it."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
        pixels = np.asarray(img.convert("L"))
    assert width > height > 200 and len(np.unique(pixels)) > 20


@pytest.mark.slow
def test_cli_writes_the_plot(devset: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots" / "levels.png"
    result = CliRunner().invoke(app, ["eval", "--refs", str(devset), "--draws", "1",
                                      "--bootstrap", "10", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "| HaarPSI |" in result.stdout and f"wrote {out}" in result.stderr
    _check_png(out)  # 13 types: 3 rows of 5 subplots


def test_plot_must_be_png(tmp_path: Path) -> None:
    from cdiqa.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Suffix for plot file '.*levels.jpg': got '.jpg', "
                                          r"expected '.png'"):
        plots.check_plot_target(tmp_path / "levels.jpg")


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    # matplotlib made unimportable in a real process (not uninstalled): the error comes
    # before any evaluation work, on one line, exit 1
    script = textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "matplotlib":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, Block())
        sys.argv = ["iqa-export", "eval", "--refs", sys.argv[1], "--plot", sys.argv[2]]
        from cdiqa.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "none"),
                           str(tmp_path / "p.png")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cdiqa[plots]" in lines[0] and "matplotlib" in lines[0]
    assert not (tmp_path / "p.png").exists()
