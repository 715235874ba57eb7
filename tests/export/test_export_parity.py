"""ONNX Runtime (CPU) against PyTorch and the numpy reference, random and natural images,
several sizes (non-multiples of 32 included) and batch sizes:

- masking modules: the graph's stats against ``cdiqa.masking`` (float64) on the graph's own
  e and a, within tolerance("onnx", "fp32");
- scores: ONNX Runtime vs torch for every domain, within tolerance("onnx_score").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cdiqa.export.check import (masking_parity, masking_probes, parity_pairs,  # noqa: E402
                                score_parity, torch_stats)
from cdiqa.manifest import FILE_CHECKPOINT, FILE_ONNX  # noqa: E402
from cdiqa.masking import STRIDES  # noqa: E402
from cdiqa.model.network import load_model  # noqa: E402
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.runtime.preprocess import feed  # noqa: E402
from cdiqa.tolerances import tolerance  # noqa: E402


@pytest.fixture(scope="module")
def engines(tiny_bundle: Path):
    scorer = Scorer.load(tiny_bundle, backend="onnxruntime")
    return scorer, load_model(scorer.manifest.path(FILE_CHECKPOINT))


def _natural_pairs(image: np.ndarray, noise: float, seed: int = 7):
    rng = np.random.default_rng(seed)
    for ref in (image, image[5:90, 3:120]):  # 96x128 and 85x117 (not multiples of 32)
        refs = [ref, np.ascontiguousarray(ref[::-1])]
        dists = [np.clip(r + rng.normal(0, noise, r.shape), 0, 1).astype(np.float32)
                 for r in refs]
        inputs = feed(refs, dists)
        yield f"natural {ref.shape}", inputs["ref"], inputs["dist"]


def test_masking_modules_match_the_reference(engines, natural_image: np.ndarray) -> None:
    manifest = engines[0].manifest
    pairs = list(parity_pairs()) + list(_natural_pairs(natural_image, 0.01))
    assert masking_parity(manifest, pairs) <= tolerance("onnx", "fp32").rtol


def test_probes_find_every_scale(engines) -> None:
    import onnx

    proto = onnx.load(str(engines[0].manifest.path(FILE_ONNX)))
    probes = masking_probes(proto)
    assert len(probes) == len(STRIDES)
    assert all(p.k == 5 and p.gamma.shape == (8,) for p in probes)


@pytest.mark.parametrize("noise", [0.01, 0.1])
def test_scores_natural_images(engines, natural_image: np.ndarray, noise: float) -> None:
    assert "worst |score difference|" in score_parity(*reversed(engines),
                                                      list(_natural_pairs(natural_image, noise)))


@pytest.mark.parametrize("h, w, b", [(64, 64, 1), (96, 128, 3), (100, 70, 2), (130, 67, 1)])
def test_scores_random_pairs(engines, h: int, w: int, b: int) -> None:
    rng = np.random.default_rng(h * w + b)
    ref = rng.random((b, 3, h, w), np.float32)
    dist = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
    score_parity(*reversed(engines), [(f"{b}x{h}x{w}", ref, dist)])


def test_partial_roi_counts_agree(engines, natural_image: np.ndarray) -> None:
    """The roi masks (as tiling uses them) give the same pixel counts as torch, exactly."""
    dist = np.clip(natural_image * 0.9 + 0.05, 0, 1).astype(np.float32)
    roi = np.array([[32, 0, 96, 64], [0, 64, 64, 128]], np.int32)
    inputs = feed([natural_image] * 2, [dist] * 2, roi)
    ours = engines[0].stats(inputs)
    theirs = torch_stats(engines[1], inputs["ref"], inputs["dist"], roi)
    np.testing.assert_array_equal(ours[2], theirs[2])


def test_torch_tensors_score_like_arrays(engines, natural_image: np.ndarray) -> None:
    """The runtime takes torch tensors (CHW or NCHW, uint8 or float in [0, 1]) as it takes the
    same pixels in numpy arrays, without importing torch itself."""
    from cdiqa.errors import ImageError

    scorer = engines[0]
    rng = np.random.default_rng(0)
    ref8 = np.round(natural_image * 255).astype(np.uint8)
    dist8 = np.round(np.clip(natural_image + rng.normal(0, 0.05, natural_image.shape), 0, 1)
                     * 255).astype(np.uint8)
    expected = scorer.score(ref8, dist8)
    ref_t = torch.from_numpy(ref8.transpose(2, 0, 1).copy())
    dist_t = torch.from_numpy(dist8.transpose(2, 0, 1).copy())
    assert scorer.score(ref_t, dist_t) == expected                         # uint8 CHW
    assert scorer.score((ref_t / 255.0)[None], (dist_t / 255.0)[None]) == pytest.approx(
        expected, abs=tolerance("onnx_score").atol)                        # float NCHW
    with pytest.raises(ImageError, match=r"Shape for tensor 'ref\[0\]'"):
        scorer.score_batch([torch.stack([ref_t, ref_t])], [dist_t])
