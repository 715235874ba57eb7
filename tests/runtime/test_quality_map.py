"""Scorer.quality_map and `iqa-export score --map`: where the degradation is, on the default
bundle (the pyramid, strides 2, 4, 4, 8, 8) and the tiny one (strides 4 .. 32)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from cdiqa.errors import ConfigError, ManifestError  # noqa: E402
from cdiqa.manifest import (DEFAULT_BUNDLE, FILE_ONNX_MAPS, MANIFEST_FILE,  # noqa: E402
                            DomainModels, FileEntry)
from cdiqa.runtime import Scorer  # noqa: E402
from cdiqa.runtime.maps import INFERNO, colour_map, map_weights, maps_path  # noqa: E402
from cdiqa.tolerances import relative_error, tolerance  # noqa: E402

BOX = (slice(64, 128), slice(96, 160))


@pytest.fixture(scope="module")
def scorer():
    with Scorer.load(DEFAULT_BUNDLE, backend="onnxruntime") as s:
        yield s


@pytest.fixture(scope="module")
def ref(large_natural_image: np.ndarray) -> np.ndarray:
    return large_natural_image  # 192 x 256


@pytest.fixture(scope="module")
def pasted(ref) -> np.ndarray:
    """``ref`` with noise pasted into ``BOX`` only."""
    dist = ref.copy()
    noise = 0.1 * np.random.default_rng(0).standard_normal((64, 64, 3))
    dist[BOX] = np.clip(dist[BOX] + noise, 0, 1)
    return dist


def test_identical_images_give_an_all_zero_map(scorer, ref) -> None:
    qmap = scorer.quality_map(ref, ref)
    assert qmap.shape == ref.shape[:2] and qmap.dtype == np.float32
    assert not qmap.any()


def test_the_map_is_brightest_where_a_distortion_was_pasted(scorer, ref, pasted) -> None:
    qmap = scorer.quality_map(ref, pasted)
    y, x = np.unravel_index(qmap.argmax(), qmap.shape)
    assert BOX[0].start <= y < BOX[0].stop and BOX[1].start <= x < BOX[1].stop
    inside = np.zeros(qmap.shape, bool)
    inside[BOX] = True
    assert qmap[inside].mean() > 20 * qmap[~inside].mean()
    assert qmap.min() >= 0


@pytest.mark.parametrize("size", [(100, 130), (67, 64)])
def test_map_shape_is_the_image_size_whatever_the_strides(scorer, tiny_bundle, rng, size) -> None:
    ref = rng.random((*size, 3), np.float32)
    dist = np.clip(ref + 0.05 * rng.standard_normal(ref.shape, np.float32), 0, 1)
    assert scorer.quality_map(ref, dist).shape == size
    with Scorer.load(tiny_bundle, backend="onnxruntime") as tiny:  # strides 4, 8, 16, 32
        assert tiny.quality_map(ref, dist).shape == size


def test_map_mean_is_the_linearised_severity_of_the_score(scorer, ref, pasted) -> None:
    """Sizes that are multiples of every stride: mean(M) = beta . (mean features of v)."""
    v = scorer.features_of_pairs([(ref, pasted)])[0]
    beta = np.concatenate(map_weights(scorer.head, scorer.manifest.model_config["channels"]))
    want = beta @ v[:beta.size]
    got = scorer.quality_map(ref, pasted).mean(dtype=np.float64)
    assert relative_error(got, want) <= tolerance("onnx").rtol


@pytest.mark.parametrize("kind", ["GBLUR", "JPEG", "AWGN", "Color_Diffusion"])
def test_map_mean_rises_with_the_severity_along_a_ladder(scorer, ref, kind) -> None:
    """The default model's consistency claim: along a ladder on which the score falls, the
    map's mean rises, level by level."""
    from cdiqa.model.distortions import distort

    dists = [distort(ref, kind, level, seed=0) for level in range(1, 6)]
    severity = [-np.log(scorer.score(ref, d)) for d in dists]
    means = [scorer.quality_map(ref, d).mean(dtype=np.float64) for d in dists]
    assert np.all(np.diff(severity) > 0), severity
    assert np.all(np.diff(means) > 0), means


def test_map_weights_are_non_negative_for_every_head_kind(tiny_bundle) -> None:
    with Scorer.load(tiny_bundle, backend="onnxruntime") as tiny:  # a PCA head
        weights = map_weights(tiny.head, tiny.manifest.model_config["channels"])
    assert [w.shape for w in weights] == [(8,)] * 4
    assert all(np.all(w >= 0) for w in weights) and any(np.any(w > 0) for w in weights)


def test_tiled_maps_equal_untiled_ones(ref, pasted) -> None:
    with Scorer.load(DEFAULT_BUNDLE, backend="onnxruntime") as whole, \
            Scorer.load(DEFAULT_BUNDLE, backend="onnxruntime", tile=64, halo=32) as tiled:
        assert tiled._tiles(ref.shape[:2]) is not None  # really tiled
        want = whole.quality_map(ref, pasted)
        got = tiled.quality_map(ref, pasted)
    assert got.shape == want.shape
    assert relative_error(got, want) <= tolerance("onnx").rtol


@pytest.fixture
def old_bundle(tmp_path):
    """The default bundle as exported before quality maps: no model.maps.onnx entry."""
    out = tmp_path / "old"
    shutil.copytree(DEFAULT_BUNDLE, out)
    raw = json.loads((out / MANIFEST_FILE).read_text())
    del raw["files"][FILE_ONNX_MAPS]
    (out / MANIFEST_FILE).write_text(json.dumps(raw))
    (out / "model.maps.onnx").unlink()
    return out


def test_an_old_bundle_scores_but_refuses_maps_naming_it(old_bundle, ref, pasted) -> None:
    with Scorer.load(old_bundle, backend="onnxruntime") as old:
        assert 0 < old.score(ref, pasted) < 1
        with pytest.raises(ManifestError, match=r"bundle '.*old'.*model\.maps\.onnx.*"
                                                r"Re-export it with `iqa-export export`"):
            old.quality_map(ref, pasted)


def test_an_adapted_domain_is_refused(scorer) -> None:
    adapted = DomainModels({"fp32": FileEntry("domains/natural/model.onnx", "0" * 64)}, True)
    manifest = replace(scorer.manifest, domain_models={"natural": adapted})
    with pytest.raises(ConfigError, match="adapted graph.*base graph only"):
        maps_path(manifest, "natural")


def test_colour_map_runs_black_to_the_table_top() -> None:
    image = colour_map(np.array([[0.0, 0.5, 1.0, 3.0]]), vmax=1.0)
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == INFERNO[0].tolist()
    assert image[0, 1].tolist() == INFERNO[4].tolist()
    assert image[0, 2].tolist() == image[0, 3].tolist() == INFERNO[-1].tolist()
    assert colour_map(np.array([[0.0, 3.0]]))[0, 1].tolist() == INFERNO[-1].tolist()  # max
    spiky = np.ones((40, 40))
    spiky[0, 0] = 1e3  # one outlier does not leave the rest dark: the top is a percentile
    assert colour_map(spiky)[20, 20].tolist() == INFERNO[-1].tolist()
    assert (colour_map(np.zeros((2, 2))) == INFERNO[0]).all()  # identical images: all dark
    with pytest.raises(ConfigError, match="vmax"):
        colour_map(np.zeros((2, 2)), vmax=float("nan"))


def test_cli_writes_the_map_as_a_png(tmp_path, ref, pasted) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from cdiqa.cli import app
    from cdiqa.images import save_image

    save_image(tmp_path / "ref.png", ref)
    save_image(tmp_path / "dist.png", pasted)
    out = tmp_path / "maps" / "map.png"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "ref.png"),
                                   str(tmp_path / "dist.png"), "--map", str(out)])
    assert res.exit_code == 0, res.output
    assert 0 < float(res.stdout.strip().splitlines()[0]) < 1
    with Image.open(out) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (256, 192)
        pixels = np.asarray(png)
    assert pixels[BOX].mean() > pixels.mean()
    assert [p.name for p in out.parent.iterdir()] == ["map.png"]  # no temp file left


def test_cli_map_failure_leaves_an_existing_png_untouched(tmp_path, old_bundle, ref,
                                                          pasted) -> None:
    from typer.testing import CliRunner

    from cdiqa.cli import app
    from cdiqa.images import save_image

    save_image(tmp_path / "ref.png", ref)
    save_image(tmp_path / "dist.png", pasted)
    pair = [str(tmp_path / "ref.png"), str(tmp_path / "dist.png")]
    out = tmp_path / "map.png"
    out.write_bytes(b"earlier")
    res = CliRunner().invoke(app, ["score", *pair, "--bundle", str(old_bundle), "--map", str(out)])
    assert isinstance(res.exception, ManifestError) and "Re-export" in str(res.exception)
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".map")] == []
    res = CliRunner().invoke(app, ["score", *pair, "--checkpoint", "x.pt", "--map", str(out)])
    assert isinstance(res.exception, ConfigError) and "Option --map" in str(res.exception)
