"""Label-free training of the causal-disentanglement model (METHOD.md items 3-5).

One step::

    refs ──► crop ──► distort(type t, levels l < l')  ──► R, D_lo, D_hi      (data.PairSampler)
    codes(R ‖ D_lo ‖ D_hi)  (one encoder call)
    loss = w_c content + w_f factual + w_cf counterfactual + w_col collapse    (per D, averaged)
         + w_r ranking(S(v(R, D_lo)), S(v(R, D_hi)))                           (losses.py)

No opinion score is read anywhere. The batch of step n is a pure function of (seed, n) and
the learning rate a pure function of n, so a run resumed from a checkpoint ends with the same
weights as an uninterrupted one, and two runs with one seed end with identical weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from cdiqa.errors import ConfigError, describe
from cdiqa.model import losses as L
from cdiqa.model.data import (PairSampler, builtin_references, dev_kinds, load_reference_folder,
                              step_seed)
from cdiqa.model.network import CDIQA, Codes, ModelConfig, read_checkpoint, write_checkpoint
from cdiqa.model.masking import features_from_stats

#: ``progress(step, total, losses)`` after every step
Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved in its checkpoints.

    ``kinds``: "dev" trains on the 13 KADID development types (the 12 others stay unseen),
    "all" on the 25. A ``domain`` adds that domain's degradations. ``refs`` is a folder of
    reference images, used together with the built-in training images unless ``builtin`` is
    False; the evaluation images are never among them. ``group`` > 1 puts that many crops
    under each drawn distortion (for the consistency loss). Runs are bitwise reproducible on
    the CPU; on a GPU ("cuda") only up to its non-deterministic kernels.

    ``freeze_encoder`` (default) keeps the encoder φ, the fixed front end and the conv trunk
    at their seeded initialisation, and trains the content/degradation heads, the decoders
    and the masking parameters. Measured on the KADID-13 development benchmark
    (docs/model.md): 150 end-to-end steps took the label-free SRCC from 0.890 to 0.59, the
    same steps with the encoder frozen to 0.891.

    The default model is the fixed pyramid (``ModelConfig.pyramid``): its encoder has nothing
    to learn, and on the development benchmark (docs/model.md) the method's losses do not
    improve it: 1500 steps at lr 1e-3 took the label-free test SRCC from 0.866 (at
    initialisation) to 0.639; the default 300 steps at lr 1e-4 leave it at 0.864.
    """

    steps: int = 300
    batch_size: int = 6
    group: int = 1
    crop: int = 96
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    refs: str | None = None
    builtin: bool = True
    kinds: Literal["dev", "all"] = "dev"
    domain: str | None = None
    checkpoint_every: int = 250
    device: str = "cpu"
    freeze_encoder: bool = True
    model: ModelConfig = field(default_factory=ModelConfig.pyramid)
    weights: L.LossWeights = field(default_factory=L.LossWeights)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(describe("Value", "option", name, getattr(self, name), ">= 1",
                                           f"Pass a positive --{name.replace('_', '-')}"))
        if self.kinds not in ("dev", "all"):
            raise ConfigError(describe("Kinds", "option", "kinds", self.kinds, "'dev' or 'all'",
                                       "Pick one"))
        if not self.builtin and self.refs is None:
            raise ConfigError("Training images for option '--no-builtin': got none, expected a "
                              "--refs folder. Pass --refs DIR or keep the built-in images.")

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of ``to_dict``."""
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d["model"])
        d["weights"] = L.LossWeights(**d["weights"])
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run returns."""

    checkpoint: Path
    steps: int
    seconds: float
    losses: dict


def training_kinds(cfg: TrainConfig) -> tuple[str, ...]:
    """The distortion names a run draws from."""
    from cdiqa.model.distortions import KADID_TYPES, degradations_for

    kinds = dev_kinds() if cfg.kinds == "dev" else tuple(t.name for t in KADID_TYPES)
    if cfg.domain is not None:
        kinds += tuple(k for k in degradations_for(cfg.domain) if k not in kinds)
    return kinds


def training_images(cfg: TrainConfig) -> list[np.ndarray]:
    """Reference images of a run: the --refs folder and/or the built-in training split."""
    images = list(load_reference_folder(cfg.refs).values()) if cfg.refs else []
    if cfg.builtin:
        images += list(builtin_references("train").values())
    return images


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The training schedule at ``step`` (``warmup_cosine`` of the config's lr and steps)."""
    return warmup_cosine(cfg.lr, step, cfg.steps, cfg.warmup)


def warmup_cosine(base: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of ``base``; a function of the step only (the
    one schedule of ``train`` and of domain adaptation)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def optimizer_step(model, opt, arrays, weights, group: int, lr: float,
                   device: str = "cpu") -> dict[str, float]:
    """One step of the label-free objective (``train`` and domain adaptation): set ``lr``,
    the losses of ``arrays`` (ref, milder, stronger, valid), backward, gradient norm clipped
    at 1.0, update; returns the losses."""
    for pg in opt.param_groups:
        pg["lr"] = lr
    parts = step_losses(model, *(torch.from_numpy(np.ascontiguousarray(x)).to(device)
                                 for x in arrays), weights, group)
    opt.zero_grad(set_to_none=True)
    parts["total"].backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def _split(codes: Codes, n: int) -> list[Codes]:
    parts = [[t.chunk(n) for t in maps] for maps in codes]
    return [Codes(*[[c[i] for c in maps] for maps in parts]) for i in range(n)]


def step_losses(model: CDIQA, ref: torch.Tensor, milder: torch.Tensor, stronger: torch.Tensor,
                valid: torch.Tensor, weights: L.LossWeights, group: int = 1,
                ) -> dict[str, torch.Tensor]:
    """Every loss of one batch and their weighted sum under "total"."""
    cr, clo, chi = _split(model.codes(torch.cat([ref, milder, stronger])), 3)
    size = (ref.shape[2], ref.shape[3])
    sev = [L.severity_from_features(features_from_stats(*model.stats_from_codes(cr, cd, None,
                                                                                 size)))
           for cd in (clo, chi)]
    dec = list(model.decoders)
    parts = {
        "content": (L.content_loss(cr, clo) + L.content_loss(cr, chi)) / 2,
        "factual": L.factual_loss(dec, cr, clo, chi) / 3,
        "counterfactual": (L.counterfactual_loss(dec, cr, clo)
                           + L.counterfactual_loss(dec, cr, chi)) / 2,
        "collapse": (L.collapse_loss(cr, clo) + L.collapse_loss(cr, chi)) / 2,
        "ranking": L.ranking_loss(sev[0], sev[1], weights.margin, valid),
        "consistency": (L.consistency_loss(sev[0], group)
                        + L.consistency_loss(sev[1], group)) / 2,
    }
    parts["total"] = sum(getattr(weights, k) * v for k, v in parts.items())
    return parts


def save_checkpoint(path: str | Path, model: CDIQA, optimizer, step: int,
                    cfg: TrainConfig) -> Path:
    """Write a resumable checkpoint atomically; ``load_model`` reads it too."""
    return write_checkpoint(path, model.cfg.to_dict(), model.state_dict(),
                            optimizer=optimizer.state_dict(), step=step,
                            train_config=cfg.to_dict())


def save_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """Write only a checkpoint's config and float32 weights (what ``load_model`` needs)."""
    blob = read_checkpoint(checkpoint)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["model"].items()}
    return write_checkpoint(out, blob["config"], state)


def _make(cfg: TrainConfig) -> tuple[CDIQA, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    model = CDIQA(cfg.model).to(cfg.device)
    model.encoder.requires_grad_(not cfg.freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, opt


def _resume(path: str | Path, cfg: TrainConfig, model: CDIQA, opt) -> int:
    blob = read_checkpoint(path, cfg.device)
    if "optimizer" not in blob or "train_config" not in blob:
        raise ConfigError(describe("Content", "checkpoint", path, "weights only",
                                   "a training checkpoint", "Resume from a file written by train"))
    saved = replace(TrainConfig.from_dict(blob["train_config"]), steps=cfg.steps,
                    checkpoint_every=cfg.checkpoint_every)
    if saved != cfg:
        diff = [k for k in saved.to_dict() if saved.to_dict()[k] != cfg.to_dict()[k]]
        raise ConfigError(describe("Training options", "checkpoint", path,
                                   f"other values of {diff}", "the options the run started with",
                                   "Resume with the same options (only --steps may change)"))
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    return int(blob["step"])


def train(cfg: TrainConfig, out: str | Path, *, resume: str | Path | None = None,
          progress: Progress | None = None) -> TrainResult:
    """Train (or resume) a model, writing checkpoints to ``out``; returns the final one.

    Raises:
        ConfigError: bad options, or a checkpoint to resume that does not match ``cfg``.
    """
    sampler = PairSampler(training_images(cfg), training_kinds(cfg), cfg.crop, cfg.batch_size,
                          cfg.group)
    model, opt = _make(cfg)
    start = _resume(resume, cfg, model, opt) if resume is not None else 0
    model.train()
    t0, logs = time.perf_counter(), {}
    for step in range(start, cfg.steps):
        b = sampler.batch(step_seed(cfg.seed, step))
        logs = optimizer_step(model, opt, (b.ref, b.milder, b.stronger, b.valid), cfg.weights,
                              cfg.group, learning_rate(cfg, step), cfg.device)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, model, opt, step + 1, cfg)
        if progress is not None:
            progress(step + 1, cfg.steps, logs)
    path = save_checkpoint(out, model, opt, max(start, cfg.steps), cfg)
    return TrainResult(path, cfg.steps, time.perf_counter() - t0, logs)
