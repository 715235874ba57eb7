"""Label-free adaptation to an imaging domain (METHOD.md item 9).

::

    domain references ──► PairSampler(crops, degradations_for(domain), levels l < l')
    (+ given ref/dist pairs: disentangling losses only, their order being unknown)
          │
          ▼
    cdiqa.model.train.step_losses   content + factual + counterfactual + collapse + ranking
          │                         (the training losses, reused: no opinion score is read)
          ▼
    heads (c, d), decoders, masking parameters updated; encoder frozen unless ``encoder``
          │
          ▼
    label-free head refitted on the adapted model's features of the domain's ladder pairs

The encoder stays frozen by default: a few hundred steps on a handful of references would
otherwise overfit it, and the frozen encoder keeps the adaptation cheap (no encoder gradient).
Each step's batch is a pure function of (seed, step), as in training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cdiqa.errors import CalibrationError, describe

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AdaptResult:
    """The adapted model and its last losses."""

    model: object
    steps: int
    losses: dict


def trainable(model, encoder: bool) -> list:
    """The parameters adaptation updates: heads, decoders, masking (and the encoder's)."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts = [model.content_heads, model.degradation_heads, model.decoders, model.masking]
    if encoder:
        parts.append(model.encoder)
    params = [p for m in parts for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _lr(base: float, step: int, steps: int, warmup: int = 10) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _given_batch(pairs: Sequence[tuple[np.ndarray, np.ndarray]], crop: int, size: int,
                 seed: int):
    """A batch of co-located crops of given (ref, dist) pairs; no order, so ranking is off."""
    rng = np.random.default_rng(seed)
    refs, dists = [], []
    for _ in range(size):
        ref, dist = pairs[rng.integers(len(pairs))]
        h, w = ref.shape[:2]
        s = min(crop, h, w)
        y, x = rng.integers(h - s + 1), rng.integers(w - s + 1)
        refs.append(ref[y: y + s, x: x + s])
        dists.append(dist[y: y + s, x: x + s])
    chw = lambda xs: np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2), np.float32)  # noqa
    d = chw(dists)
    return chw(refs), d, d, np.zeros(size, bool)


def adapt(model, references: Sequence[np.ndarray], kinds: Sequence[str], *, steps: int,
          batch_size: int = 6, crop: int = 96, lr: float = 1e-3, encoder: bool = False,
          seed: int = 0, pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
          weights=None, progress: Progress | None = None) -> AdaptResult:
    """Fine-tune a copy of ``model`` on a domain without labels; ``model`` is not changed.

    Args:
        model: a ``CDIQA`` (the bundle's checkpoint).
        references: the domain's reference images, float32 RGB, each >= ``crop`` or upscaled.
        kinds: degradations of the domain (``degradations_for``).
        steps: optimizer steps (0: the model is returned unchanged, as a copy).
        pairs: given (ref, dist) pairs of the domain; every other step draws from them.
        weights: ``cdiqa.model.losses.LossWeights``; None: training's defaults.

    Raises:
        CalibrationError: no reference to adapt on.
    """
    import torch

    from cdiqa.model.data import PairSampler, step_seed
    from cdiqa.model.losses import LossWeights
    from cdiqa.model.train import step_losses

    if not references:
        raise CalibrationError(describe("References", "adaptation", "references", 0,
                                        "at least one image", "Give the domain images"))
    model = copy.deepcopy(model)
    if steps <= 0:
        return AdaptResult(model.eval(), 0, {})
    torch.manual_seed(seed)
    params = trainable(model, encoder)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sampler = PairSampler(list(references), list(kinds), crop, batch_size)
    weights = weights or LossWeights()
    model.train()
    if not encoder:
        model.encoder.eval()
    logs: dict = {}
    for step in range(steps):
        s = step_seed(seed, step, salt="adapt")
        if pairs and step % 2 == 1:
            arrays = _given_batch(pairs, crop, batch_size, s)
        else:
            b = sampler.batch(s)
            arrays = (b.ref, b.milder, b.stronger, b.valid)
        for group in opt.param_groups:
            group["lr"] = _lr(lr, step, steps)
        parts = step_losses(model, *(torch.from_numpy(np.ascontiguousarray(x))
                                     for x in arrays), weights)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        logs = {k: float(v.detach()) for k, v in parts.items()}
        if progress is not None:
            progress("adapt", step + 1, steps)
    for p in model.parameters():
        p.requires_grad_(True)
    return AdaptResult(model.eval(), steps, logs)
