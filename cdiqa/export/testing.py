"""A tiny model and bundle for tests and smoke runs: exports in seconds, scores nothing useful.

The head is fitted label-free (``cdiqa.model.fit_heads.fit_label_free``) on the tiny model's
own features of noisy pairs, so its scores spread over (0, 1) like a real head's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cdiqa import _lazy
from cdiqa.manifest import MANIFEST_FILE, Manifest, load_manifest

#: architecture of the tiny model (8 channels per scale: D = 32, v has 64 features)
TINY = {"channels": (8, 8, 8, 8), "stem_channels": 8}
#: domains of the tiny bundle (the second one has a head fitted on stronger noise)
TINY_DOMAINS = ("natural", "medical")


def tiny_model(seed: int = 0):
    """An untrained ``CDIQA`` with 8 channels per scale, seeded.

    Convolutions get He (ReLU-gain) initialisation and zero biases. torch's default init
    shrinks activations ~100x per scale in this network, so an untrained model's coarse-scale
    e = d(D) - d(R) sits at float32 rounding level (v ~ 1e-11, 10-30 % apart between any
    two correct implementations); a trained model's features, like these, are far above it.
    """
    from cdiqa.model.network import CDIQA, ModelConfig

    torch = _lazy.torch()
    torch.manual_seed(seed)
    model = CDIQA(ModelConfig(**TINY))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return model.eval()


def fitted_head(model, noise: float = 0.05, seed: int = 0):
    """A label-free PCA head fitted on ``model``'s features of 16 noisy 64x64 pairs."""
    from cdiqa.model.fit_heads import fit_label_free

    torch = _lazy.torch()
    rng = np.random.default_rng(seed)
    ref = rng.random((16, 3, 64, 64), np.float32)
    levels = np.linspace(0.2, 2.0, 16, dtype=np.float32)[:, None, None, None] * noise
    dist = np.clip(ref + levels * rng.standard_normal(ref.shape, np.float32), 0, 1)
    with torch.inference_mode():
        v = model.features(torch.from_numpy(ref), torch.from_numpy(dist)).numpy()
    return fit_label_free(v, "pca")


def tiny_bundle(out: str | os.PathLike, *, reuse: bool = True, seed: int = 0) -> Manifest:
    """Export the tiny model with ``TINY_DOMAINS`` profiles to ``out`` (kept if ``reuse`` and
    a bundle is already there)."""
    from cdiqa.export.bundle import export_bundle

    out = Path(out)
    if reuse and (out / MANIFEST_FILE).is_file():
        return load_manifest(out)
    model = tiny_model(seed)
    heads = {d: fitted_head(model, noise=0.05 * (i + 1), seed=seed)
             for i, d in enumerate(TINY_DOMAINS)}
    return export_bundle(out, model, heads)
