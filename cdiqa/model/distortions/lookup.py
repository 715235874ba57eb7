"""Any registered distortion by name or id, and applying it: the KADID types and the domain
degradations together (``kadid`` and ``domains`` each know only their own; ``domains`` builds
on ``kadid``, so the lookup over both lives here, above them).
"""

from __future__ import annotations

import numpy as np

from cdiqa.model.distortions import _util as u
from cdiqa.model.distortions._util import DistortionType
from cdiqa.model.distortions.domains import DOMAIN_TYPES
from cdiqa.model.distortions.kadid import _BY_NAME, kadid_type


def distort(image: np.ndarray, kind: str | int | DistortionType, level: int, *,
            seed: int) -> np.ndarray:
    """Apply one registered distortion (a KADID type or a domain degradation) at one level.

    Args:
        image: float RGB (H, W, 3) in [0, 1].
        kind: a KADID name or id (``"GBLUR"``, ``1``), a domain degradation name
            (``"haze"``), or a ``DistortionType``.
        level: 1 (mildest) .. 5 (strongest).
        seed: the only source of randomness (``np.random.default_rng(seed)``).

    Returns:
        float32 (H, W, 3) in [0, 1]; the same seed always gives the same bytes.

    Raises:
        ConfigError: unknown kind, level outside 1..5 or a bad seed.
        ImageError: the image is not float (H, W, 3) in [0, 1], or too small for the type.
        BackendUnavailable: JPEG2000 without Pillow's OpenJPEG codec.

    >>> img = np.full((64, 64, 3), 0.5, np.float32)
    >>> distort(img, "GBLUR", 3, seed=0).shape
    (64, 64, 3)
    """
    dtype = distortion_type(kind)
    lv = u.check_level(level, dtype.name)
    rng = np.random.default_rng(u.check_seed(seed))
    x = u.check_image(image)
    out = dtype.fn(x, dtype.params[lv - 1], rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def distortion_type(kind: str | int | DistortionType) -> DistortionType:
    """Look up any registered distortion: a KADID name or id, or a domain degradation name.

    Names are matched exactly (case included); an unknown name raises ``ConfigError`` with
    the nearest names as a suggestion, never as a silent substitute.
    """
    if isinstance(kind, DistortionType):
        return kind
    if isinstance(kind, str) and kind in _BY_NAME:
        return _BY_NAME[kind]
    if isinstance(kind, (int, np.integer)) and not isinstance(kind, bool) or (
            isinstance(kind, str) and kind.strip().isdigit()):
        return kadid_type(kind)
    for t in DOMAIN_TYPES:
        if t.name == kind:
            return t
    raise u.unknown_name_error("Distortion", kind, [*_BY_NAME, *(t.name for t in DOMAIN_TYPES)],
                               "Use a KADID name (e.g. 'GBLUR'), a KADID id 1..25 or a domain "
                               "degradation name (see DOMAIN_DEGRADATIONS)")


__all__ = ["distort", "distortion_type"]
