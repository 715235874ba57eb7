"""Built-in domain samples, folders of images, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from cdiqa.calibration import MIN_IMAGES, CalibConfig, domain_samples
from cdiqa.calibration.bundle import split
from cdiqa.calibration.domains import BUILTIN, check_domain
from cdiqa.errors import CalibrationError


@pytest.mark.parametrize("domain", sorted(BUILTIN))
def test_builtin_samples(domain):
    s = domain_samples(domain)
    assert len(s.groups) >= MIN_IMAGES
    for r in s.references:
        assert r.image.dtype == np.float32 and r.image.ndim == 3 and r.image.shape[2] == 3
        assert min(r.image.shape[:2]) >= 64 and 0 <= r.image.min() and r.image.max() <= 1
    cal, held = split(s, 0.25, "built-in")
    assert held and cal
    assert not {r.group for r in cal} & {r.group for r in held}  # disjoint sources


def test_real_pairs_of_underwater_and_medical():
    for domain, n in (("underwater", 11), ("medical", 5)):
        pairs = domain_samples(domain).real_pairs
        assert len(pairs) == n
        for p in pairs:
            assert p.ref.shape == p.dist.shape and not np.array_equal(p.ref, p.dist)


def test_neutron_has_six_gray_transmission_sources():
    """The two CT slices decode (lossless JPEG 2000, through Pillow) and are gray: every
    source of the neutron set is a single-channel image in RGB."""
    s = domain_samples("neutron")
    assert s.groups == ["RG1", "RG3", "693", "CT_abdomen", "CT_head", "shepp_logan_phantom"]
    for r in s.references:
        assert np.array_equal(r.image[..., 0], r.image[..., 2]) and r.image.std() > 0.05


def test_a_missing_ct_slice_is_named(tmp_path, monkeypatch):
    from cdiqa.calibration import domains

    monkeypatch.setattr(domains, "nema_folder", lambda: tmp_path)
    with pytest.raises(CalibrationError, match="explicit_VR-UN.dcm.*missing.*--images"):
        domains._ct_slices()


def test_unknown_domain_names_the_choices():
    with pytest.raises(CalibrationError, match=r"Domain for option '--domain': got 'medicl'.*"
                                               r"Did you mean 'medical'\?"):
        check_domain("medicl")
    with pytest.raises(CalibrationError, match="one of .*'neutron'"):
        CalibConfig(domain="xray")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(CalibrationError, match="no such folder"):
        domain_samples("medical", tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CalibrationError, match="got no image file, expected files ending in"):
        domain_samples("medical", tmp_path)


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CalibrationError, match="broken.png' in --images cannot be used"):
        domain_samples("medical", tmp_path)


def test_too_few_images_says_how_many(tmp_path):
    from cdiqa.images import save_image

    rng = np.random.default_rng(0)
    for i in range(MIN_IMAGES - 1):
        save_image(tmp_path / f"im{i}.png", rng.random((80, 80, 3)).astype(np.float32))
    s = domain_samples("neutron", tmp_path)
    with pytest.raises(CalibrationError, match=rf"got {MIN_IMAGES - 1} image\(s\), expected at "
                                               rf"least {MIN_IMAGES} \({MIN_IMAGES - 1} to adapt"):
        split(s, 0.25, str(tmp_path))
