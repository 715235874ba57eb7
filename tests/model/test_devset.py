"""The development set's sources, splits, crop and loading (cdiqa.model.devset)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdiqa.errors import ConfigError
from cdiqa.model import devset


def test_splits_are_disjoint_and_the_test_split_has_twelve_photographs():
    names = [s.name for s in devset.SOURCES]
    assert len(names) == len(set(names))
    test = [s for s in devset.SOURCES if s.split == "test"]
    assert len(test) >= 12 and {s.split for s in devset.SOURCES} == set(devset.SPLITS)
    # illustrations (ukui-wallpapers) never reach the reported numbers
    assert not any("ukui" in s.origin for s in test)


def test_no_reference_comes_from_a_source_reserved_for_independent_evaluation():
    reserved = ("lomiri-wallpapers-16.04", "sklearn", "matplotlib", "scipy")
    for s in devset.SOURCES:
        assert not any(r in s.origin for r in reserved), s
        assert s.origin.split(":")[0] in ("skimage", "deb")


def test_crop_resize_keeps_the_centre_at_kadid_size():
    # 600 wide x 300 high: a 4:3 centre crop is 400 x 300, so the red side bands go
    img = np.zeros((300, 600, 3), np.float32)
    img[:, :100, 0] = img[:, 500:, 0] = 1.0
    img[:, 100:500, 1] = 1.0
    out = devset.crop_resize(img)
    assert out.shape == (384, 512, 3) and out.dtype == np.float32
    assert out[:, :, 0].max() == 0.0 and out[:, :, 1].min() == 1.0
    tall = devset.crop_resize(np.ones((900, 300, 3), np.float32), (64, 48))
    assert tall.shape == (48, 64, 3)


def test_load_split_reads_an_index_and_names_the_fetch_command_when_missing(tmp_path):
    from cdiqa.images import save_image

    with pytest.raises(ConfigError, match="Development set in .*no sources.json.*"
                                          "iqa-export fetch-devset"):
        devset.load_split("test", tmp_path)
    rng = np.random.default_rng(0)
    records = []
    for name, split in (("a", "test"), ("b", "tune")):
        save_image(tmp_path / f"{name}.png", rng.random((48, 64, 3)))
        records.append({"name": name, "split": split, "file": f"{name}.png"})
    (tmp_path / devset.SOURCES_FILE).write_text(json.dumps(records))
    assert list(devset.load_split("tune", tmp_path)) == ["b"]
    assert devset.load_split("test", tmp_path)["a"].shape == (48, 64, 3)
    with pytest.raises(ConfigError, match="Split for development set 'split': got eval, expected one of"):
        devset.load_split("eval", tmp_path)


def test_default_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CDIQA_DEVSET", str(tmp_path))
    assert devset.default_cache() == tmp_path


def test_a_failing_package_command_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"Command 'dpkg -x missing.deb': got '.*', expected "
                                          r"the unpacked package\. Delete the cache"):
        devset._run(["dpkg", "-x", "missing.deb", "out"], tmp_path, "the unpacked package",
                    "Delete the cache folder and fetch again")
