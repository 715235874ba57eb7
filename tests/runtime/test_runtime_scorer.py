"""Scorer: inputs of every kind, batching by size, domains, backends, threads, errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from cdiqa.errors import BackendUnavailable, ConfigError, ImageError, ManifestError  # noqa: E402
from cdiqa.images import save_image  # noqa: E402
from cdiqa.runtime import Scorer, SessionOptions  # noqa: E402
from cdiqa.tolerances import tolerance  # noqa: E402


@pytest.fixture(scope="module")
def scorer(tiny_bundle: Path) -> Scorer:
    return Scorer.load(tiny_bundle, backend="onnxruntime")


def _noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 1).astype(np.float32)


def test_identical_images_score_one(scorer: Scorer, natural_image: np.ndarray) -> None:
    assert scorer.score(natural_image, natural_image) == 1.0


def test_score_falls_with_noise(scorer: Scorer, natural_image: np.ndarray) -> None:
    scores = [scorer.score(natural_image, _noisy(natural_image, s)) for s in (0.02, 0.1, 0.3)]
    assert all(0.0 <= s < 1.0 for s in scores)
    assert scores[0] > scores[1] > scores[2]


def test_files_and_array_types_agree(scorer: Scorer, natural_image: np.ndarray,
                                     tmp_path: Path) -> None:
    ref8 = np.round(natural_image * 255).astype(np.uint8)
    dist8 = np.round(_noisy(natural_image, 0.05) * 255).astype(np.uint8)
    save_image(tmp_path / "ref.png", ref8)
    save_image(tmp_path / "dist.png", dist8)
    from_files = scorer.score(tmp_path / "ref.png", str(tmp_path / "dist.png"))
    from_uint8 = scorer.score(ref8, dist8)
    from_float = scorer.score(ref8 / np.float32(255), dist8 / np.float32(255))
    from_uint16 = scorer.score(ref8.astype(np.uint16) * 257, dist8.astype(np.uint16) * 257)
    assert from_files == from_uint8 == from_float
    assert abs(from_uint16 - from_uint8) <= tolerance("onnx_score").atol


def test_mixed_sizes_batch_like_single_pairs(scorer: Scorer, natural_image: np.ndarray) -> None:
    refs = [natural_image, natural_image[:64, :80], natural_image[::-1], natural_image[:70, :70]]
    dists = [_noisy(r, 0.05, i) for i, r in enumerate(refs)]
    batch = scorer.score_batch(refs, dists)
    single = np.array([scorer.score(r, d) for r, d in zip(refs, dists)])
    assert batch.shape == (4,)
    np.testing.assert_allclose(batch, single, rtol=0, atol=tolerance("onnx_score").atol)
    small = Scorer(scorer.manifest, scorer.session, max_batch=1)
    np.testing.assert_allclose(small.score_batch(refs, dists), single, rtol=0,
                               atol=tolerance("onnx_score").atol)


def test_domains(scorer: Scorer, natural_image: np.ndarray) -> None:
    dist = _noisy(natural_image, 0.05)
    medical = scorer.with_domain("medical")
    assert medical.session is scorer.session and medical.domain == "medical"
    assert medical.score(natural_image, dist) != scorer.score(natural_image, dist)
    with pytest.raises(ManifestError, match=r"Domain for bundle .*'medicla'.*Did you mean "
                                            r"'medical'"):
        scorer.with_domain("medicla")


def test_threads_share_one_scorer(scorer: Scorer, natural_image: np.ndarray) -> None:
    pairs = [(natural_image, _noisy(natural_image, 0.01 * (i + 1), i)) for i in range(8)]
    expected = [scorer.score(r, d) for r, d in pairs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: scorer.score(*p), pairs * 3))
    assert got == expected * 3


def test_pair_errors(scorer: Scorer, natural_image: np.ndarray) -> None:
    with pytest.raises(ImageError, match=r"Size for image 'dist\[0\]': got 64x48, "
                                         r"expected 128x96"):
        scorer.score(natural_image, natural_image[:48, :64])
    with pytest.raises(ImageError, match=r"at least 64x64"):
        scorer.score(natural_image[:32], natural_image[:32])
    with pytest.raises(ImageError, match=r"does not exist"):
        scorer.score("no/such/file.png", natural_image)
    with pytest.raises(Exception, match=r"Count for images 'dists': got 1, expected 2"):
        scorer.score_batch([natural_image] * 2, [natural_image])


def test_backend_names(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"Backend for runtime 'backend': got 'onnxrt'.*"
                                          r"Did you mean 'onnxruntime'"):
        Scorer.load(tiny_bundle, backend="onnxrt")
    with pytest.raises(BackendUnavailable, match=r"tensorrt"):
        Scorer.load(tiny_bundle, backend="tensorrt")  # absent here: never faked


def test_auto_falls_back_to_onnxruntime(tiny_bundle: Path) -> None:
    with Scorer.load(tiny_bundle) as auto:
        assert type(auto.session).__name__ == "OnnxRuntimeSession"


def test_session_options_and_cache(tiny_bundle: Path, natural_image: np.ndarray,
                                   tmp_path: Path) -> None:
    dist = _noisy(natural_image, 0.05)
    base = Scorer.load(tiny_bundle, backend="onnxruntime").score(natural_image, dist)
    options = SessionOptions(threads=1, cache_dir=tmp_path / "cache")
    first = Scorer.load(tiny_bundle, backend="onnxruntime", options=options)
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob(".*"))
    second = Scorer.load(tiny_bundle, backend="onnxruntime", options=options)
    for s in (first, second):
        assert abs(s.score(natural_image, dist) - base) <= tolerance("onnx_score").atol
    with pytest.raises(ConfigError, match=r"Threads for session option 'threads': got 0"):
        Scorer.load(tiny_bundle, backend="onnxruntime", options=SessionOptions(threads=0))
    with pytest.raises(ConfigError, match=r"Device for backend 'onnxruntime': got 'tpu'"):
        Scorer.load(tiny_bundle, backend="onnxruntime", device="tpu")


def test_altered_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    profile = copy / "profiles" / "natural.json"
    profile.write_text(profile.read_text().replace('"tau"', '"tau" ', 1))
    with pytest.raises(ManifestError, match=r"sha256 for bundle file 'profiles/natural.json'"):
        Scorer.load(copy)


def test_load_without_a_bundle_opens_the_bundled_default(natural_image: np.ndarray) -> None:
    from cdiqa.manifest import DEFAULT_BUNDLE, load_manifest

    with Scorer.load() as scorer:
        assert scorer.manifest.model_id == load_manifest(DEFAULT_BUNDLE).model_id
        assert scorer.domain == scorer.manifest.default_domain
        assert scorer.score(natural_image, natural_image) == 1.0


def test_pil_images_score_like_arrays(scorer: Scorer, natural_image: np.ndarray) -> None:
    """(Torch tensors: tests/export/test_export_parity.py, where torch is installed.)"""
    from PIL import Image

    ref8 = np.round(natural_image * 255).astype(np.uint8)
    dist8 = np.round(_noisy(natural_image, 0.05) * 255).astype(np.uint8)
    expected = scorer.score(ref8, dist8)
    assert scorer.score(Image.fromarray(ref8), Image.fromarray(dist8)) == expected
    assert scorer.score(Image.fromarray(ref8), dist8) == expected


def test_cdiqa_score_on_arrays_and_paths(tiny_bundle: Path, scorer: Scorer,
                                         natural_image: np.ndarray, tmp_path: Path) -> None:
    import cdiqa
    from cdiqa.runtime import scorer as scorer_module

    dist = _noisy(natural_image, 0.05)
    save_image(tmp_path / "ref.png", natural_image)
    save_image(tmp_path / "dist.png", dist)
    with Scorer.load() as default:
        expected = default.score(tmp_path / "ref.png", tmp_path / "dist.png")
    assert cdiqa.score(tmp_path / "ref.png", str(tmp_path / "dist.png")) == expected
    assert cdiqa.score(natural_image, natural_image) == 1.0
    assert cdiqa.score(natural_image, dist, bundle=tiny_bundle) == scorer.score(natural_image,
                                                                                 dist)
    opened = len(scorer_module._OPEN)
    cdiqa.score(natural_image, dist, bundle=tiny_bundle)  # the scorer is kept, not reopened
    assert len(scorer_module._OPEN) == opened
