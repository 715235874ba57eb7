"""cdiqa: causal-disentanglement full-reference image quality, from training to deployment.

>>> import cdiqa
>>> cdiqa.score("ref.png", "dist.png")                       # doctest: +SKIP
0.8731

Importing cdiqa imports nothing heavy (not even numpy); torch, onnx, onnxruntime, tensorrt
and cuda-python are imported lazily by the parts that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"


def score(ref, dist, *, bundle=None, domain: str | None = None, precision: str = "fp32",
          backend: str = "auto", device: str | None = None,
          max_pixels: int | None = None) -> float:
    """Quality of one (reference, distorted) pair in [0, 1], higher is better.

    ``ref`` and ``dist``: file paths, numpy arrays (H, W[, C]) uint8 or float in [0, 1],
    Pillow images, or torch tensors (C, H, W) / (1, C, H, W) in [0, 1]. Scored by the
    torch-free runtime with the bundled default model unless ``bundle`` names another; the
    scorer stays open for later calls with the same options (``cdiqa.runtime.scorer.score``).
    ``max_pixels``: the pixel budget per image (None: ``cdiqa.images.MAX_PIXELS``, 64 MP).

    >>> import numpy as np, cdiqa
    >>> image = np.random.default_rng(0).random((96, 128, 3))
    >>> cdiqa.score(image, image)                            # doctest: +SKIP
    1.0
    """
    from cdiqa.runtime.scorer import score as score_pair

    return score_pair(ref, dist, bundle=bundle, domain=domain, precision=precision,
                      backend=backend, device=device, max_pixels=max_pixels)
