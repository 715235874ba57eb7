"""tests/fixtures/make_fixtures.py (``cdiqa.export.testing``) still makes the committed fixtures.

Run once into a temporary folder and compared with tests/fixtures. On one machine with one
torch build the rerun is byte-equal (checked when the fixtures were made), but not across
CPUs: the heads are fitted on torch convolution outputs, whose last bits follow the CPU's
kernels. So the comparison is by meaning: the same files, the same manifest (but for hashes,
ids and tool versions), the same graphs node for node, initializers and weights within
tolerance("onnx", "fp32"), and the same scores within tolerance("onnx_score") per domain.
A failure means the fixtures are stale: rerun the script and commit what it writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

from cdiqa.manifest import load_manifest  # noqa: E402
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCRIPT = FIXTURES / "make_fixtures.py"
STALE = "the committed fixture is stale: rerun python tests/fixtures/make_fixtures.py"
#: manifest fields that follow the files' last bits (the id is the checkpoint's hash) or the
#: tools' versions rather than what the bundle holds
VOLATILE = {"model_id", "versions"}
GRAPHS = sorted(p.name for p in (FIXTURES / "tiny-bundle").glob("*.onnx"))


@pytest.fixture(scope="module")
def remade(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _without_hashes(raw):
    """The manifest as a dict, every sha256 and VOLATILE field dropped."""
    if isinstance(raw, dict):
        return {k: _without_hashes(v) for k, v in raw.items()
                if k != "sha256" and k not in VOLATILE}
    return [_without_hashes(v) for v in raw] if isinstance(raw, list) else raw


def _split(path: Path):
    """(the graph with every tensor's data cleared, name -> array of those tensors)."""
    model = onnx.load(str(path))
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(f"{n.name}.{a.name}", a.t) for n in model.graph.node for a in n.attribute
                if a.HasField("t")]
    arrays = {}
    for name, t in tensors:
        arrays[name] = numpy_helper.to_array(t)
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                      "uint64_data"):
            t.ClearField(field)
    return model.graph, list(model.opset_import), arrays


def test_same_files(remade: Path) -> None:
    committed = [f for f in _files(FIXTURES) if not f.endswith((".py", ".pyc"))]
    assert _files(remade) == committed, STALE


def test_same_manifest(remade: Path) -> None:
    ours = load_manifest(FIXTURES / "tiny-bundle").to_dict()
    fresh = load_manifest(remade / "tiny-bundle").to_dict()
    assert _without_hashes(fresh) == _without_hashes(ours), STALE


@pytest.mark.parametrize("name", GRAPHS)
def test_same_graphs(remade: Path, name: str) -> None:
    graph, opsets, arrays = _split(FIXTURES / "tiny-bundle" / name)
    fresh_graph, fresh_opsets, fresh_arrays = _split(remade / "tiny-bundle" / name)
    assert fresh_opsets == opsets and fresh_graph == graph, f"{name}: {STALE}"
    for key, value in arrays.items():
        err = relative_error(fresh_arrays[key], value)
        assert err <= tolerance("onnx", "fp32").rtol, f"{name} {key}: {err:.2e}; {STALE}"


def test_same_weights(remade: Path) -> None:
    import torch

    ours = torch.load(FIXTURES / "tiny-bundle" / "model.pt", weights_only=True)
    fresh = torch.load(remade / "tiny-bundle" / "model.pt", weights_only=True)
    assert fresh["config"] == ours["config"] and fresh["model"].keys() == ours["model"].keys()
    for key, value in ours["model"].items():
        err = relative_error(fresh["model"][key].numpy(), value.numpy())
        assert err <= tolerance("torch", "fp32").rtol, f"model.pt {key}: {err:.2e}; {STALE}"


@pytest.mark.parametrize("domain", ["natural", "medical"])
def test_same_scores(remade: Path, natural_image: np.ndarray, domain: str) -> None:
    rng = np.random.default_rng(0)
    dists = [np.clip(natural_image + rng.normal(0, s, natural_image.shape), 0, 1)
             .astype(np.float32) for s in (0.01, 0.05, 0.2)]
    refs = [natural_image] * len(dists)
    with Scorer.load(FIXTURES / "tiny-bundle", domain=domain) as ours, \
            Scorer.load(remade / "tiny-bundle", domain=domain) as fresh:
        np.testing.assert_allclose(fresh.score_batch(refs, dists), ours.score_batch(refs, dists),
                                   rtol=0, atol=tolerance("onnx_score").atol, err_msg=STALE)


def test_same_image(remade: Path) -> None:
    from PIL import Image

    ours = np.asarray(Image.open(FIXTURES / "natural.png"))
    fresh = np.asarray(Image.open(remade / "natural.png"))
    assert ours.shape == (192, 256, 3) and np.array_equal(fresh, ours), STALE
