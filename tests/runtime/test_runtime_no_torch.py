"""Using the runtime never imports torch: load a bundle, score, stream, tile, ``cdiqa.score``
and a batch, in a fresh interpreter, then look at sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import json, sys
import numpy as np
from cdiqa.runtime import Scorer
from cdiqa.runtime.stream import StreamScorer
rng = np.random.default_rng(0)
ref = rng.random((200, 300, 3), np.float32)
dist = np.clip(ref + 0.05, 0, 1)
with Scorer.load(sys.argv[1], tile=128) as scorer:
    scores = scorer.score_batch([ref, ref[:64, :64]], [dist, dist[:64, :64]]).tolist()
    with StreamScorer(scorer) as stream:
        scores.append(stream.submit(ref, dist).result())
import cdiqa
from PIL import Image
from cdiqa.runtime.batch import PairJob, score_each
scores.append(cdiqa.score(Image.fromarray((ref * 255).astype(np.uint8)), dist, bundle=sys.argv[1]))
with Scorer.load(sys.argv[1]) as scorer:
    scores += [r.score for r in score_each(scorer, [PairJob(ref, dist)])]
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript'))
print(json.dumps({"scores": scores, "heavy": heavy}))
"""


def test_scoring_imports_no_torch(tiny_bundle: Path) -> None:
    pytest.importorskip("onnxruntime")
    proc = subprocess.run([sys.executable, "-c", CODE, str(tiny_bundle)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert len(result["scores"]) == 5 and all(0 <= s <= 1 for s in result["scores"])
