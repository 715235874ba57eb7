"""One error hierarchy for cdiqa.

Messages follow one template: ``<what> for <tensor/file> '<name>': got <actual>, expected
<expected>. <How to fix>.`` The CLI prints a ``CdiqaError`` without a traceback and exits 1.
"""


class CdiqaError(Exception):
    """A user-facing error: bad input, bad configuration or a missing dependency."""


class ConfigError(CdiqaError):
    """Options that are unknown or incompatible."""


class ImageError(CdiqaError):
    """An image file or array that cannot be scored as given."""


class ImageDecodeError(ImageError):
    """Bytes or a file that do not decode as an image (the decoder's error is the cause);
    an ``ImageError`` that is not one of these decoded, but its pixels cannot be scored."""


class ImageTooLarge(ImageError):
    """An image over the pixel budget (``cdiqa.images.MAX_PIXELS`` or the caller's
    ``max_pixels``), found from its header or shape before its pixels are decoded or copied."""


class Abandoned(CdiqaError):
    """Work dropped unfinished because its deadline passed (nobody waits for its result)."""


class ShapeError(CdiqaError):
    """A tensor whose shape, rank, dtype or channel count does not fit."""


class ManifestError(CdiqaError):
    """A bundle whose manifest or files are missing, altered or of an unknown version."""


class BackendUnavailable(CdiqaError):
    """An optional dependency (onnxruntime, tensorrt, cuda-python, a GPU) is not present."""


class ParityError(CdiqaError):
    """A graph whose outputs disagree with their reference (torch, the masking spec, the
    scoring graph, or itself across batches and rois) by more than the tolerance."""


class KernelError(CdiqaError):
    """A CUDA driver call, kernel build or launch that failed."""


class CalibrationError(CdiqaError):
    """A domain calibration that cannot run or did not pass its accuracy gate."""


def describe(what: str, kind: str, name: object, got: object, expected: object, fix: str) -> str:
    """Format a message with the house template.

    >>> describe("Shape", "tensor", "ref", (3, 4), "(B, 3, H, W)", "Pass an RGB batch")
    "Shape for tensor 'ref': got (3, 4), expected (B, 3, H, W). Pass an RGB batch."
    """
    fix = fix.rstrip(".")
    end = "" if fix.endswith(("?", "!")) else "."
    return f"{what} for {kind} '{name}': got {got}, expected {expected}. {fix}{end}"
