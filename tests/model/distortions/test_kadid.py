"""The 25 KADID-10k types: registry, contract, determinism, severity order, errors."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdiqa.errors import BackendUnavailable, ConfigError, ImageError
from cdiqa.model.data import MARGINALS
from cdiqa.model.distortions import LEVELS, KADID_TYPES, distort, distortion_type, kadid, kadid_type
from cdiqa.tolerances import relative_error, tolerance

NAMES = [t.name for t in KADID_TYPES]
RANDOM = [t.name for t in KADID_TYPES if t.random]


def _image(h: int = 96, w: int = 128) -> np.ndarray:
    """A small natural photo (scikit-image's astronaut), or a synthetic one without it."""
    from PIL import Image
    try:
        from skimage import data
        rgb = Image.fromarray(data.astronaut()).resize((w, h), Image.Resampling.LANCZOS)
        return np.asarray(rgb, np.float32) / 255
    except ImportError:
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([x, y, 0.5 + 0.4 * np.sin(12 * x * y)], axis=2)
        img[h // 4: h // 2, w // 4: w // 2] = [0.9, 0.2, 0.1]
        return img.astype(np.float32)


IMG = _image()


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def test_registry_lists_25_types_in_kadid_order():
    assert [t.id for t in KADID_TYPES] == list(range(1, 26))
    assert len(set(NAMES)) == 25
    assert all(len(t.params) == 5 for t in KADID_TYPES)


def test_names_match_the_kadid_marginals_file():
    text = MARGINALS.read_text(encoding="utf-8")  # the package's copy
    named = {(int(r["type_id"]), r["type_name"]) for r in csv.DictReader(io.StringIO(text))}
    assert len(named) == 13
    for type_id, name in named:
        assert kadid_type(type_id).name == name
        assert kadid_type(name).id == type_id


def test_lookup_by_name_id_and_numeric_string():
    assert kadid_type("JPEG").id == 10
    assert kadid_type(1).name == "GBLUR"
    assert kadid_type("21").name == "Pixelate"
    assert distortion_type(3) is kadid_type("Motion_Blur")


@pytest.mark.parametrize("name", NAMES)
def test_every_level_keeps_shape_dtype_and_range(name):
    for level in LEVELS:
        out = distort(IMG, name, level, seed=1)
        assert out.shape == IMG.shape
        assert out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_the_same_bytes(name):
    a = distort(IMG, name, 4, seed=123)
    b = distort(IMG, name, 4, seed=123)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", RANDOM)
def test_random_types_depend_on_the_seed(name):
    base = distort(IMG, name, 5, seed=0)
    assert any(distort(IMG, name, 5, seed=s).tobytes() != base.tobytes() for s in (1, 2, 3))


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(RANDOM)))
def test_deterministic_types_ignore_the_seed(name):
    assert distort(IMG, name, 3, seed=0).tobytes() == distort(IMG, name, 3, seed=9).tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_severity_order_holds_in_mse(name):
    # MSE to the reference grows along every known-order pair. For Mean_Shift and
    # Contrast_Change that is only within one side of the identity level (see kadid.py).
    dtype = kadid_type(name)
    mse = {lv: _mse(distort(IMG, name, lv, seed=5), IMG) for lv in LEVELS}
    for milder, stronger in dtype.severity_pairs():
        assert mse[stronger] > mse[milder], (milder, stronger, mse)


@pytest.mark.parametrize("name", ["Mean_Shift", "Contrast_Change"])
def test_two_sided_types_are_identity_at_level_3(name):
    dtype = kadid_type(name)
    assert not dtype.monotone and dtype.identity_level == 3
    out = distort(IMG, name, 3, seed=0)
    assert relative_error(out, IMG) <= tolerance("numpy", "fp32").rtol
    pairs = dtype.severity_pairs()
    assert (3, 1) in pairs and (4, 5) in pairs and (1, 5) not in pairs and (2, 4) not in pairs


def test_monotone_types_order_every_pair():
    assert len(kadid_type("GBLUR").severity_pairs()) == 10


def test_brighten_and_darken_move_the_mean_the_right_way():
    assert distort(IMG, "Brighten", 3, seed=0).mean() > IMG.mean()
    assert distort(IMG, "Darken", 3, seed=0).mean() < IMG.mean()


@pytest.mark.parametrize("level", [0, 6, 2.0, True, "3"])
def test_bad_level_is_a_config_error(level):
    with pytest.raises(ConfigError, match=r"Level for distortion 'GBLUR': got .*, expected an "
                                          r"integer 1\.\.5"):
        distort(IMG, "GBLUR", level, seed=0)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"Did you mean 'GBLUR'"):
        distort(IMG, "Gblur", 1, seed=0)
    with pytest.raises(ConfigError, match=r"KADID type for name 'Motion Blur'.*'Motion_Blur'"):
        kadid_type("Motion Blur")


def test_id_outside_1_to_25_is_a_config_error():
    with pytest.raises(ConfigError, match=r"got 26, expected 1\.\.25"):
        kadid_type(26)


def test_bad_seed_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Seed for argument 'seed': got -1"):
        distort(IMG, "AWGN", 1, seed=-1)


def test_bad_images_are_image_errors():
    with pytest.raises(ImageError, match=r"Dtype for image 'image': got uint8"):
        distort((IMG * 255).astype(np.uint8), "AWGN", 1, seed=0)
    with pytest.raises(ImageError, match=r"Shape for image 'image': got \(96, 128\)"):
        distort(IMG[..., 0], "AWGN", 1, seed=0)
    with pytest.raises(ImageError, match=r"Range for image 'image'"):
        distort(IMG * 2, "AWGN", 1, seed=0)


def test_patch_types_refuse_too_small_images():
    with pytest.raises(ImageError, match=r"Size for image for distortion 'Color_Block'"):
        distort(_image(24, 24), "Color_Block", 1, seed=0)


def test_missing_jpeg2000_codec_is_named_not_substituted(monkeypatch):
    monkeypatch.setattr(kadid, "jpeg2000_available", lambda: False)
    with pytest.raises(BackendUnavailable, match=r"OpenJPEG \(jpg_2000\) codec"):
        distort(IMG, "JPEG2000", 1, seed=0)


def test_import_pulls_in_no_torch():
    code = "import sys, cdiqa.model.distortions; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
