"""The shipped default bundle (cdiqa/assets/default/bundle) is the default model, and
`iqa-export score REF DIST` scores through it with the torch-free runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cdiqa.manifest import DEFAULT_BUNDLE, FILE_CHECKPOINT, load_manifest

ASSETS = DEFAULT_BUNDLE.parent
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
REBUILD = "rebuild it: iqa-export export --out cdiqa/assets/default/bundle"

pytestmark = pytest.mark.skipif(not (ASSETS / "model.pt").is_file(),
                                reason="no default model in cdiqa/assets/default")


def test_bundle_is_the_default_model() -> None:
    torch = pytest.importorskip("torch")
    manifest = load_manifest(DEFAULT_BUNDLE)  # every sha256 checked
    ours = torch.load(manifest.path(FILE_CHECKPOINT), weights_only=True)
    theirs = torch.load(ASSETS / "model.pt", weights_only=True)
    assert ours["config"] == theirs["config"], REBUILD
    assert ours["model"].keys() == theirs["model"].keys(), REBUILD
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in ours["model"]), REBUILD
    profile = json.loads(manifest.domain_path(manifest.default_domain).read_text())
    assert profile == json.loads((ASSETS / "head.json").read_text()), REBUILD


def test_cli_scores_with_the_runtime_without_torch() -> None:
    pytest.importorskip("onnxruntime")
    code = ("import json, sys\nsys.argv = ['iqa-export', 'score', sys.argv[1], sys.argv[2], "
            "'--json']\nfrom cdiqa.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert not e.code\nprint(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] == 'torch')))")
    proc = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "ref.png"),
                           str(EXAMPLES / "dist.png")], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    score = json.loads("\n".join(lines[:-1]))["score"]

    from cdiqa.runtime import Scorer

    with Scorer.load(DEFAULT_BUNDLE) as scorer:
        assert score == scorer.score(EXAMPLES / "ref.png", EXAMPLES / "dist.png")


def test_runtime_scores_like_the_torch_model() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from cdiqa.model.scoring import score_pair
    from cdiqa.runtime import Scorer
    from cdiqa.tolerances import tolerance

    pairs = [(EXAMPLES / "ref.png", EXAMPLES / n) for n in ("dist.png", "blur.png", "ref.png")]
    with Scorer.load(DEFAULT_BUNDLE) as scorer:
        for ref, dist in pairs:
            assert abs(scorer.score(ref, dist) - score_pair(ref, dist)) <= \
                tolerance("onnx_score").atol
