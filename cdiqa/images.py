"""Images in: files, bytes and arrays to float32 RGB in [0, 1], H x W x 3 (numpy + Pillow only).

Conversions, all explicit and done here, never inside the network:

=================  =====================================================================
input              becomes
=================  =====================================================================
8-bit RGB          / 255
grayscale (L, 1)   the gray value copied to R, G and B
16-bit (I;16, I)   / 65535, then as grayscale (or RGB for H x W x 3 uint16 arrays)
float (F) files    must already lie in [0, 1]
palette (P, PA)    expanded through the palette to RGB
RGBA, LA           alpha dropped: the stored colour is scored, not a composite
CMYK, YCbCr, ...   converted by Pillow to RGB
=================  =====================================================================
EXIF orientation is applied, so a photo is scored the way viewers show it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cdiqa.errors import ImageDecodeError, ImageError, describe
from cdiqa.files import atomic_write
from cdiqa.masking import MIN_SIZE


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1], shape (H, W, 3).

    Raises:
        ImageError: the file is missing, unreadable, corrupt or holds NaN/inf.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"Image file '{path}' does not exist. Check the path.")
    return _decode(lambda: Image.open(path), str(path))


def load_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode the bytes of an image file as float32 RGB in [0, 1], shape (H, W, 3).

    The same decoding as ``load_image`` (the conversions of the table above, EXIF
    orientation, the same checks and messages), for a file that is already in memory: an
    upload, an archive member, a database blob.

    Args:
        data: the whole file's content (PNG, JPEG, TIFF, BMP, ...).
        name: what error messages call the image (a file name, a form field).

    Raises:
        ImageDecodeError: the bytes are not a complete image file (the decoder's own
            exception is the ``__cause__``).
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

    return _decode(lambda: Image.open(io.BytesIO(data)), name)


def image_from_pil(im, name: str = "image") -> np.ndarray:
    """A Pillow image as float32 RGB in [0, 1], shape (H, W, 3), converted like a file.

    The conversions of the table above and EXIF orientation apply, as for ``load_image`` of
    the file it came from; ``im`` itself is left unchanged (and open).

    >>> from PIL import Image
    >>> image_from_pil(Image.new("L", (2, 1), 255)).tolist()
    [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]
    """
    from contextlib import nullcontext

    return _decode(lambda: nullcontext(im), name)


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


def _decode(open_image, name: str) -> np.ndarray:
    """Open (``open_image()``), decode and convert one image file; errors name ``name``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with open_image() as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = _array_from_pil(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"Image file '{name}' cannot be read: {_short(exc)}. "
                               "Check that it is a complete PNG, JPEG, TIFF or BMP file."
                               ) from exc
    return as_image(arr, name=name)


def _short(exc: Exception) -> str:
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


def as_image(array, name: str = "array") -> np.ndarray:
    """Validate and convert an array to float32 RGB (H, W, 3) in [0, 1].

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays of uint8, uint16 or float
    (floats must already lie in [0, 1]).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(describe("Shape", "image", name, a.shape, "(H, W), (H, W, 3) or (H, W, 4)",
                                  "Pass one image, channels last"))
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535)
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
