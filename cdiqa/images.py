"""Images in: files, bytes and arrays to float32 RGB in [0, 1], H x W x 3 (numpy + Pillow only).

Conversions, all explicit and done here, never inside the network:

=================  =====================================================================
input              becomes
=================  =====================================================================
8-bit RGB          / 255
grayscale (L, 1)   the gray value copied to R, G and B
16-bit (I;16, I)   / 65535, then as grayscale (or RGB for H x W x 3 uint16 arrays)
16-bit RGB(A) PNG  / 65535, all 16 bits kept (Pillow alone keeps 8, see ``_png16_rgb``)
float (F) files    must already lie in [0, 1]
palette (P, PA)    expanded through the palette to RGB
RGBA, LA           alpha dropped: the stored colour is scored, not a composite
CMYK, YCbCr, ...   converted by Pillow to RGB
=================  =====================================================================
EXIF orientation is applied, so a photo is scored the way viewers show it. MPO files (the
JPEG of phone cameras with a second, depth or preview, frame) give their first frame.

The pixel budget: no image larger than ``max_pixels`` (width x height; None: ``MAX_PIXELS``)
is decoded or converted. Files are checked from their header, before any pixel is decoded,
arrays from their shape before they are copied; above it ``ImageTooLarge`` is raised. Pillow's
own decompression-bomb check (``PIL.Image.MAX_IMAGE_PIXELS``, refusing above 2x ~89 MP)
comes out as the same ``ImageTooLarge``, so a header-only bomb gets one answer whatever its
size; a budget above Pillow's limit is refused (``pixel_budget``), so this budget decides.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cdiqa.errors import (CdiqaError, ConfigError, ImageDecodeError, ImageError, ImageTooLarge,
                          describe)
from cdiqa.files import atomic_write
from cdiqa.masking import MIN_SIZE

#: file suffixes (lower case) that every folder reader takes as images (score's folder mode,
#: training and domain reference folders)
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: default pixel budget of one image (width x height): 64 MP is 768 MB as float32 RGB, and a
#: pair of them is what one request or CLI pair may hold decoded
MAX_PIXELS = 64_000_000


def pixel_budget(max_pixels: int | None = None) -> int:
    """``max_pixels``, or ``MAX_PIXELS`` for None (the one place the default is resolved).

    Raises:
        ConfigError: not a positive integer, or above Pillow's own decompression-bomb
            limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, ~179 MP), where Pillow, not this
            budget, would decide.
    """
    if max_pixels is None:
        return MAX_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(describe("Option", "pixel budget", "max_pixels", repr(max_pixels),
                                   "a positive integer (pixels per image)",
                                   f"Pass e.g. {MAX_PIXELS}, or None for the default"))
    from PIL import Image

    pillow = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if pillow is not None and max_pixels > pillow:
        raise ConfigError(describe("Option", "pixel budget", "max_pixels", max_pixels,
                                   f"at most {pillow} (2 x PIL.Image.MAX_IMAGE_PIXELS, above "
                                   "which Pillow refuses files itself)", "Lower it, or raise "
                                   "PIL.Image.MAX_IMAGE_PIXELS in the application first"))
    return max_pixels


def check_pixels(width: int, height: int, name: str, max_pixels: int | None = None) -> None:
    """Raise ``ImageTooLarge`` if a ``width`` x ``height`` image is over the pixel budget.

    >>> check_pixels(9000, 9000, "big.png", 64_000_000)
    Traceback (most recent call last):
    ...
    cdiqa.errors.ImageTooLarge: Size for image 'big.png': got 9000x9000 (81000000 pixels), expected at most 64000000 pixels. Downscale or crop it, or raise the pixel budget (max_pixels, --max-pixels).
    """
    budget = pixel_budget(max_pixels)
    if width * height > budget:
        raise ImageTooLarge(_too_large(name, f"{width}x{height} ({width * height} pixels)",
                                       budget))


def _too_large(name: str, got: str, budget: int) -> str:
    return describe("Size", "image", name, got, f"at most {budget} pixels",
                    "Downscale or crop it, or raise the pixel budget (max_pixels, --max-pixels)")


def image_header(data: bytes, name: str, max_pixels: int | None = None
                 ) -> tuple[str, int, int]:
    """(format, width, height) of an image file's bytes, from its header: no pixel decoded.

    Raises:
        ImageDecodeError: no known image format, or a header Pillow cannot parse (its
            exception is the ``__cause__``; ``UnidentifiedImageError`` for an unknown format).
        ImageTooLarge: over Pillow's decompression-bomb limit (the message quotes
            ``max_pixels``; the caller checks the size itself with ``check_pixels``).
    """
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format, im.width, im.height
    except Image.DecompressionBombError as exc:
        raise _pillow_bomb(name, max_pixels) from exc
    except (CdiqaError, MemoryError):
        raise
    except Exception as exc:
        raise _decode_error(name, exc) from exc


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1], shape (H, W, 3).

    Raises:
        ImageError: the file is missing, unreadable, corrupt or holds NaN/inf.
        ImageTooLarge: over ``max_pixels`` (None: ``MAX_PIXELS``), checked from the header.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"Image file '{path}' does not exist. Check the path.")
    return _decode(lambda: Image.open(path), str(path), max_pixels)


def load_image_bytes(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode the bytes of an image file as float32 RGB in [0, 1], shape (H, W, 3).

    The same decoding as ``load_image`` (the conversions of the table above, EXIF
    orientation, the same checks and messages), for a file that is already in memory: an
    upload, an archive member, a database blob.

    Args:
        data: the whole file's content (PNG, JPEG, TIFF, BMP, ...).
        name: what error messages call the image (a file name, a form field).
        max_pixels: the pixel budget (None: ``MAX_PIXELS``), checked from the header.

    Raises:
        ImageDecodeError: the bytes are not a complete image file (the decoder's own
            exception, of whatever type, is the ``__cause__``).
        ImageTooLarge: over the pixel budget.
        ImageError: float pixels are NaN/inf or outside [0, 1].

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("L", (2, 1), 255).save(buf, format="PNG")
    >>> load_image_bytes(buf.getvalue(), "white.png").tolist()
    [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]
    """
    import io

    from PIL import Image

    return _decode(lambda: Image.open(io.BytesIO(data)), name, max_pixels)


def image_from_pil(im, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """A Pillow image as float32 RGB in [0, 1], shape (H, W, 3), converted like a file.

    The conversions of the table above and EXIF orientation apply, as for ``load_image`` of
    the file it came from; ``im`` itself is left unchanged (and open).

    >>> from PIL import Image
    >>> image_from_pil(Image.new("L", (2, 1), 255)).tolist()
    [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]
    """
    from contextlib import nullcontext

    return _decode(lambda: nullcontext(im), name, max_pixels, own=False)


def array_from_tensor(tensor, name: str = "tensor") -> np.ndarray:
    """A torch tensor (C, H, W), (1, C, H, W) or (H, W) as a numpy (H, W[, C]) array.

    Values are not rescaled: float tensors must lie in [0, 1] (``as_image`` checks them),
    uint8 tensors are 0..255. Works on any device and dtype (bfloat16/float16 become float32)
    and never imports torch: only a tensor's own methods are called.
    """
    t = tensor.detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim not in (2, 3):
        raise ImageError(describe("Shape", "tensor", name, tuple(t.shape),
                                  "(C, H, W), (1, C, H, W) or (H, W)",
                                  "Pass one image (use Scorer.score_batch for several)"))
    if t.is_floating_point() and str(t.dtype) != "torch.float64":
        t = t.float()
    a = t.numpy()
    return a.transpose(1, 2, 0) if a.ndim == 3 else a


def _decode(open_image, name: str, max_pixels: int | None, own: bool = True) -> np.ndarray:
    """Open (``open_image()``), check the size, decode and convert one image; errors name
    ``name``. ``own``: the image is ours to change (not a caller's Pillow image)."""
    from PIL import Image

    try:
        with open_image() as im:
            check_pixels(im.width, im.height, name, max_pixels)  # before any pixel is decoded
            arr = _png16_rgb(open_image, im) if own else None
            if arr is None:
                arr = _array_from_pil(_oriented(im, own))
    except Image.DecompressionBombError as exc:
        raise _pillow_bomb(name, max_pixels) from exc
    except (CdiqaError, MemoryError):
        raise
    except Exception as exc:  # decoders raise any type on hostile files (a TIFF: TypeError)
        raise _decode_error(name, exc) from exc
    return as_image(arr, name=name, max_pixels=max_pixels)


def _oriented(im, own: bool):
    """``im`` loaded and turned upright by its EXIF orientation (in place when ours)."""
    from PIL import ImageOps

    im.load()
    if own:
        ImageOps.exif_transpose(im, in_place=True)
        return im
    return ImageOps.exif_transpose(im)


#: 16-bit RGB(A) PNG rawmodes -> the one that reads each sample's low byte
_PNG16_LOW = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _png16_rgb(open_image, im) -> np.ndarray | None:
    """A 16-bit RGB(A) PNG as uint16 (H, W, 3); None for any other image.

    Pillow has no 16-bit RGB mode: it keeps each big-endian sample's high byte. A second
    decode of the file, told its samples are little-endian, keeps the other byte, i.e. the
    low one; both rawmodes are 48 (64) bits a pixel, so PNG's filters are undone alike.
    """
    tile = im.tile[0] if im.format == "PNG" and len(im.tile) == 1 else None
    low_mode = _PNG16_LOW.get(tile[3]) if tile is not None else None
    if low_mode is None:
        return None
    high = np.asarray(_oriented(im, True))
    with open_image() as lo:
        t = lo.tile[0]
        lo.tile = [t._replace(args=low_mode) if hasattr(t, "_replace")
                   else (t[0], t[1], t[2], low_mode)]
        low = np.asarray(_oriented(lo, True))
    out = high[..., :3].astype(np.uint16) << 8
    out |= low[..., :3]
    return out


def _pillow_bomb(name: str, max_pixels: int | None) -> ImageTooLarge:
    """Pillow refused the size (over 2x ``PIL.Image.MAX_IMAGE_PIXELS``) before our check."""
    from PIL import Image

    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return ImageTooLarge(_too_large(name, f"more than {limit} pixels (Pillow's "
                                          "decompression-bomb limit)",
                                    min(limit, pixel_budget(max_pixels))))


def _decode_error(name: str, exc: BaseException) -> ImageDecodeError:
    return ImageDecodeError(f"Image file '{name}' cannot be read: {_short(exc)}. "
                            "Check that it is a complete PNG, JPEG, TIFF or BMP file.")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _array_from_pil(im) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":  # 16-bit PNGs open as 32-bit ints holding 0..65535
        a = np.asarray(im, dtype=np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError("32-bit integer pixels outside 0..65535")
        return a.astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        im = im.convert("RGBA") if mode in ("P", "PA") else im
        return np.asarray(im.convert("RGB"))
    return np.asarray(im.convert("RGB"))


def as_image(array, name: str = "array", max_pixels: int | None = None) -> np.ndarray:
    """Validate and convert an array to float32 RGB (H, W, 3) in [0, 1].

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays of uint8, uint16 or float
    (floats must already lie in [0, 1]), of at most ``max_pixels`` (None: ``MAX_PIXELS``)
    pixels, checked before anything is copied.
    """
    a = np.asarray(array)
    if a.ndim in (2, 3):
        if 0 in a.shape:
            raise ImageError(describe("Shape", "image", name, a.shape,
                                      "at least one pixel and one channel",
                                      "Pass a non-empty image"))
        check_pixels(a.shape[1], a.shape[0], name, max_pixels)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(describe("Shape", "image", name, a.shape, "(H, W), (H, W, 3) or (H, W, 4)",
                                  "Pass one image, channels last"))
    if a.dtype in (np.uint8, np.uint16):  # in place: one float32 copy, not two
        out = a.astype(np.float32)
        out /= np.float32(255 if a.dtype == np.uint8 else 65535)
        return out
    if a.dtype.kind not in "fiu" or a.dtype.kind in "iu":
        raise ImageError(describe("Dtype", "image", name, a.dtype, "uint8, uint16 or float",
                                  "Convert the array first"))
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ImageError(describe("Values", "image", name, "NaN or inf", "finite values",
                                  "Remove invalid pixels before scoring"))
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ImageError(describe("Range", "image", name, f"[{lo:.4g}, {hi:.4g}]", "[0, 1]",
                                  "Scale float images to [0, 1] (or pass uint8/uint16)"))
    return a


def check_pair(ref: np.ndarray, dist: np.ndarray, ref_name: str = "ref",
               dist_name: str = "dist") -> None:
    """Raise ``ImageError`` unless ref and dist have the same size of at least MIN_SIZE."""
    if ref.shape != dist.shape:
        raise ImageError(describe("Size", "image", dist_name, f"{dist.shape[1]}x{dist.shape[0]}",
                                  f"{ref.shape[1]}x{ref.shape[0]} like '{ref_name}'",
                                  "Reference and distorted images must have the same size"))
    h, w = ref.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise ImageError(describe("Size", "image", ref_name, f"{w}x{h}",
                                  f"at least {MIN_SIZE}x{MIN_SIZE} pixels",
                                  "Upscale or use larger images"))


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write float [0, 1] (H, W, 3) or uint8 image as 8-bit, atomically (temp file + rename)."""
    from PIL import Image

    path = Path(path)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, np.float64) * 255), 0, 255).astype(np.uint8)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda f: Image.fromarray(a).save(f, format=fmt))
