"""Images in: explicit conversions and one-line errors that name the file."""

import numpy as np
import pytest
from PIL import Image

from cdiqa.errors import ImageDecodeError, ImageError
from cdiqa.images import (array_from_tensor, as_image, check_pair, image_from_pil,
                          load_image, load_image_bytes, save_image)
from cdiqa.masking import MIN_SIZE


def _save(tmp_path, name, arr, mode=None, **kw):
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p, **kw) if mode else Image.fromarray(arr).save(p, **kw)
    return p


def test_rgb_png_round_trip(tmp_path, rng):
    a = rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)
    img = load_image(_save(tmp_path, "x.png", a))
    assert img.dtype == np.float32 and img.shape == (70, 80, 3)
    np.testing.assert_array_equal(np.rint(img * 255).astype(np.uint8), a)


def test_grayscale_replicated(tmp_path, rng):
    a = rng.integers(0, 256, (66, 67), dtype=np.uint8)
    img = load_image(_save(tmp_path, "g.png", a))
    assert np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2])
    np.testing.assert_allclose(img[..., 0], a / 255, atol=1e-7)


def test_16bit_grayscale_scaled_by_65535(tmp_path):
    a = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    img = load_image(p)
    np.testing.assert_allclose(img[..., 2], a / 65535, atol=1e-6)
    assert img.max() == pytest.approx(1.0)


def test_rgba_drops_alpha_and_palette_expands(tmp_path, rng):
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    img = load_image(_save(tmp_path, "a.png", rgba))
    np.testing.assert_allclose(img, rgba[..., :3] / 255, atol=1e-7)
    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(img, np.asarray(pal.convert("RGB")) / 255, atol=1e-7)


def test_missing_and_corrupt_files_named(tmp_path):
    with pytest.raises(ImageError, match="'.*nope.png' does not exist"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match="bad.png' cannot be read"):
        load_image(bad)
    good = _save(tmp_path, "t.jpg", np.zeros((80, 80, 3), np.uint8))
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="trunc.jpg' cannot be read"):
        load_image(trunc)


def _files_of_every_kind(tmp_path, rng) -> list:
    """One file per row of the conversion table (and an EXIF-rotated photo)."""
    rgb = rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)
    paths = [_save(tmp_path, "rgb.png", rgb), _save(tmp_path, "l.png", rgb[..., 0]),
             _save(tmp_path, "rgba.png", np.dstack([rgb, rgb[..., :1]])),
             _save(tmp_path, "la.png", np.dstack([rgb[..., 0], rgb[..., 1]]), mode="LA")]
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        tmp_path / "p.png")
    Image.fromarray(rgb[..., 1].astype(np.float32) / 255).save(tmp_path / "f.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    return paths + [tmp_path / n for n in ("g16.png", "p.png", "f.tif", "rotated.jpg")]


def test_load_image_bytes_decodes_like_load_image(tmp_path, rng):
    for path in _files_of_every_kind(tmp_path, rng):
        from_bytes = load_image_bytes(path.read_bytes(), path.name)
        assert from_bytes.dtype == np.float32, path.name
        np.testing.assert_array_equal(from_bytes, load_image(path), err_msg=path.name)
    assert load_image_bytes((tmp_path / "rotated.jpg").read_bytes(), "r").shape == (72, 64, 3)


def test_load_image_bytes_errors_name_the_image(tmp_path, rng):
    noise = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    good = _save(tmp_path, "t.png", noise).read_bytes()
    for data in (b"not an image", good[:200], b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, b""):
        with pytest.raises(ImageError, match=r"^Image file 'upload\.png' cannot be read: .+\. "
                                             r"Check that it is a complete PNG") as info:
            load_image_bytes(data, "upload.png")
        assert info.value.__cause__ is not None  # the decoder's own error, kept
        assert isinstance(info.value, ImageDecodeError)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[:200])
    with pytest.raises(ImageError) as from_file:
        load_image(bad)
    with pytest.raises(ImageError) as from_bytes:
        load_image_bytes(good[:200], str(bad))
    assert str(from_bytes.value) == str(from_file.value)


def test_load_image_bytes_checks_float_pixels_after_decoding(tmp_path):
    Image.fromarray(np.full((64, 64), 2.0, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match=r"Range for image 'f\.tif': got \[2, 2\]") as info:
        load_image_bytes((tmp_path / "f.tif").read_bytes(), "f.tif")
    assert info.value.__cause__ is None  # it decoded: the pixels are what is wrong
    assert not isinstance(info.value, ImageDecodeError)


def test_decompression_bomb_is_an_image_too_large(tmp_path, monkeypatch):
    from cdiqa.errors import ImageTooLarge

    data = _save(tmp_path, "big.png", np.zeros((64, 64, 3), np.uint8)).read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 > 2 x 1000: a "bomb"
    with pytest.raises(ImageTooLarge, match="'big.png': got more than 2000 pixels .Pillow"):
        load_image_bytes(data, "big.png")
    with pytest.raises(ImageTooLarge, match="big.png': got more than 2000 pixels"):
        load_image(tmp_path / "big.png")


def test_pil_images_convert_like_their_files(tmp_path, rng):
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    for name in ("rotated.png", "gray.png"):
        with Image.open(tmp_path / name) as im:
            got = image_from_pil(im, name)
            assert im.size == (80, 64)  # the caller's image is left as it was
        np.testing.assert_array_equal(got, load_image(tmp_path / name))
    assert image_from_pil(Image.open(tmp_path / "rotated.png")).shape == (80, 64, 3)


def test_torch_tensors_become_channels_last_arrays(rng):
    torch = pytest.importorskip("torch")
    a = rng.random((64, 80, 3)).astype(np.float32)
    chw = torch.from_numpy(a.transpose(2, 0, 1).copy())
    for t in (chw, chw[None], chw.clone().requires_grad_(True)):
        np.testing.assert_array_equal(array_from_tensor(t), a)
    half = array_from_tensor(chw.half())  # float16 rounds the same way in torch and numpy
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, a.astype(np.float16).astype(np.float32))
    assert array_from_tensor(chw[0]).shape == (64, 80)
    assert array_from_tensor((chw * 255).to(torch.uint8)).dtype == np.uint8
    with pytest.raises(ImageError, match=r"Shape for tensor 'batch': got \(2, 3, 64, 80\)"):
        array_from_tensor(torch.stack([chw, chw]), "batch")


def test_array_checks():
    with pytest.raises(ImageError, match="NaN or inf"):
        as_image(np.full((64, 64, 3), np.nan, np.float32), "frame")
    with pytest.raises(ImageError, match="Range for image 'frame'"):
        as_image(np.full((64, 64, 3), 2.0), "frame")
    with pytest.raises(ImageError, match="Shape for image 'x'"):
        as_image(np.zeros((2, 64, 64, 3)), "x")
    with pytest.raises(ImageError, match="Dtype"):
        as_image(np.zeros((64, 64, 3), np.int32), "i")
    assert as_image(np.full((64, 64, 3), 65535, np.uint16)).max() == 1.0


def test_pair_checks():
    a = np.zeros((MIN_SIZE, MIN_SIZE + 1, 3), np.float32)
    check_pair(a, a)
    with pytest.raises(ImageError, match="same size"):
        check_pair(a, np.zeros((MIN_SIZE, MIN_SIZE, 3), np.float32), "r.png", "d.png")
    small = np.zeros((MIN_SIZE - 1, 100, 3), np.float32)
    with pytest.raises(ImageError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
        check_pair(small, small)


