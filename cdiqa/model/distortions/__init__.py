"""Synthetic distortions: the 25 KADID-10k types and domain degradations (numpy, no torch).

>>> import numpy as np
>>> from cdiqa.model.distortions import distort, degradations_for
>>> img = np.full((64, 64, 3), 0.5, np.float32)
>>> [distort(img, kind, 2, seed=0).dtype.name for kind in degradations_for("underwater")]
['float32', 'float32', 'float32']

- ``kadid.py``: ``KADID_TYPES``, ``kadid_type``, ``kadid_category``.
- ``domains.py``: ``DOMAIN_TYPES``, ``DOMAIN_DEGRADATIONS``, ``degradations_for``.
- ``lookup.py``: ``distortion_type`` and ``distort`` over both (KADID and domain types).
- ``render.py``: ``render_set`` writes distorted PNGs and ``pairs.csv``; ``read_pairs`` reads it.
"""

from cdiqa.model.distortions._util import LEVELS, DistortionType
from cdiqa.model.distortions.domains import DOMAIN_DEGRADATIONS, DOMAIN_TYPES, degradations_for
from cdiqa.model.distortions.kadid import (
    KADID_CATEGORIES,
    KADID_TYPES,
    jpeg2000_available,
    kadid_category,
    kadid_type,
)
from cdiqa.model.distortions.lookup import distort, distortion_type
from cdiqa.model.distortions.render import PAIRS_COLUMNS, Pair, pair_seed, read_pairs, render_set

__all__ = [
    "DOMAIN_DEGRADATIONS",
    "DOMAIN_TYPES",
    "KADID_CATEGORIES",
    "KADID_TYPES",
    "LEVELS",
    "PAIRS_COLUMNS",
    "DistortionType",
    "Pair",
    "degradations_for",
    "distort",
    "distortion_type",
    "jpeg2000_available",
    "kadid_category",
    "kadid_type",
    "pair_seed",
    "read_pairs",
    "render_set",
]
