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

Two settings differ from training, both measured on the cross-domain benchmark
(docs/calibration.md): the encoder is fine-tuned too, and ``ADAPT_WEIGHTS`` turn on the
severity-consistency term (the same degradation at the same level on ``group`` different
crops must read as one severity) with a wider ranking margin. With a frozen encoder, or
without the consistency term, the ranking is already satisfied on the ladders and the
adaptation barely moves SRCC (+0.000..+0.005 on three domains); the consistency term is what
teaches the model the domain's content-independent severity scale. Still no opinion score:
only the generator's knowledge that two crops got the same degradation.
Each step's batch is a pure function of (seed, step), as in training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cdiqa.errors import CalibrationError, describe

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]
#: adaptation learning rate. 1e-4 since the default model is the pyramid: at 1e-3 (the conv
#: trunk's recipe) 300 steps dropped its underwater ladder SRCC from 0.901 to 0.779, at 1e-4
#: the adapted model reached 0.911 (docs/calibration.md)
ADAPT_LR = 1e-4
#: crops per shared degradation in an adaptation batch (the consistency term's group)
ADAPT_GROUP = 3


def adapt_weights():
    """Loss weights of adaptation: training's, plus consistency 10 and ranking margin 1.0.

    Measured (held-out references, fixed head refit): medical 0.530 -> 0.652, screen 0.889
    -> 0.944, neutron 0.837 -> 0.884; the same run without the consistency term: 0.585,
    0.779, 0.870.
    """
    from cdiqa.model.losses import LossWeights

    return LossWeights(consistency=10.0, margin=1.0)


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


#: warm-up steps of the adaptation's schedule (``cdiqa.model.train.warmup_cosine``)
ADAPT_WARMUP = 10


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
          batch_size: int = 6, crop: int = 96, lr: float = ADAPT_LR, encoder: bool = True,
          seed: int = 0, pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
          weights=None, group: int = ADAPT_GROUP,
          progress: Progress | None = None) -> AdaptResult:
    """Fine-tune a copy of ``model`` on a domain without labels; ``model`` is not changed.

    Args:
        model: a ``CDIQA`` (the bundle's checkpoint).
        references: the domain's reference images, float32 RGB, each >= ``crop`` or upscaled.
        kinds: degradations of the domain (``degradations_for``).
        steps: optimizer steps (0: the model is returned unchanged, as a copy).
        pairs: given (ref, dist) pairs of the domain; every other step draws from them.
        weights: ``cdiqa.model.losses.LossWeights``; None: ``adapt_weights()``.
        group: crops that share one degradation in a batch (divides ``batch_size``).

    Raises:
        CalibrationError: no reference to adapt on.
        ConfigError: ``group`` does not divide ``batch_size``.
    """
    import torch

    from cdiqa.model.data import PairSampler, step_seed
    from cdiqa.model.train import optimizer_step, warmup_cosine

    if not references:
        raise CalibrationError(describe("References", "adaptation", "references", 0,
                                        "at least one image", "Give the domain images"))
    model = copy.deepcopy(model)
    if steps <= 0:
        return AdaptResult(model.eval(), 0, {})
    torch.manual_seed(seed)
    params = trainable(model, encoder)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sampler = PairSampler(list(references), list(kinds), crop, batch_size, group)
    weights = weights or adapt_weights()
    model.train()
    if not encoder:
        model.encoder.eval()
    logs: dict = {}
    for step in range(steps):
        s = step_seed(seed, step, salt="adapt")
        size = group  # given pairs share nothing: their group of one has no consistency term
        if pairs and step % 2 == 1:
            arrays, size = _given_batch(pairs, crop, batch_size, s), 1
        else:
            b = sampler.batch(s)
            arrays = (b.ref, b.milder, b.stronger, b.valid)
        logs = optimizer_step(model, opt, arrays, weights, size,
                              warmup_cosine(lr, step, steps, ADAPT_WARMUP))
        if progress is not None:
            progress("adapt", step + 1, steps)
    for p in model.parameters():
        p.requires_grad_(True)
    return AdaptResult(model.eval(), steps, logs)
