"""The causal-disentanglement network (METHOD.md items 1-7).

Two encoders. The default, ``frontend="pyramid"``, is a fixed multi-scale front end whose
bands are the masking scales (docs/model.md has the measurements that chose it)::

    R, D ──► YIQ ──► 2x2 mean ──► /2: luma Scharr (dx, dy)
                 ──► 2x2 mean ──► /4: luma (dx, dy)      /4: chroma (I, Q)
                 ──► 2x2 mean ──► /8: luma (dx, dy)      /8: chroma (I, Q)
                 ──► 2x2 mean ──►                       /16: chroma (I, Q)    (φ)
    each band masked by the reference's activity, and /2 luma, /4 luma, /8 chroma also by
    both images' (the similarity form): 9 masking scales (``PYRAMID_BANDS``)

The conv trunk (``frontend="fixed"`` or ``"learned"``)::

    R, D ──► front end (fixed opponent colour + gradients, or learned) ──► stem /2
          ──► stage1 /4 ──► stage2 /8 ──► stage3 /16 ──► stage4 /32        (encoder φ)
    per scale s:  c_s = Hc_s(φ_s)   d_s = Hd_s(φ_s)                      (1x1 heads)
                  G_s(c, d) ≈ φ_s                                        (decoder, training)
                  e = d_s(D) - d_s(R),  a = W_s |c_s(R)|^γ_s
                  stats_s = masking(e · roi_mask, a)  ──► sums, sumsq, counts
    v = [mean, std] over all channels of all scales (0 for identical images)

Reference and distorted images go through the encoder in separate calls: identical inputs of
identical shape then give bitwise identical codes, so e == 0 and v == 0 exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from cdiqa.masking import STRIDES as TRUNK_STRIDES
from cdiqa.model import masking as tm

# LMN opponent space of FSIMc/VSI: luminance and two chroma axes
_OPPONENT = ((0.06, 0.63, 0.27), (0.30, 0.04, -0.35), (0.34, -0.60, 0.17))
# NTSC YIQ (HaarPSI's colour space): luma and two chroma axes
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
#: pyramid bands: (kind, stride, activity, mean weight, std weight). Luma bands hold Scharr
#: (dx, dy) of Y, chroma bands (I, Q). activity: the masking's content activity from the
#: reference alone ("reference", n = e² / (σ² + φ_R²), METHOD.md) or from both images
#: ("both", GMSD's and HaarPSI's similarity form, bounded). The weights are the label-free
#: energy's per pooling (mean, std), chosen on the tune split (docs/model.md): the first five
#: bands are the 2026-12-01 pyramid, the last four added chroma at /16 and the similarity
#: forms of /2, /4 (for spatial and colour distortions).
PYRAMID_BANDS: tuple[tuple[str, int, str, float, float], ...] = (
    ("luma", 2, "reference", 0.0, 1.0), ("luma", 4, "reference", 0.0, 1.0),
    ("chroma", 4, "reference", 0.25, 0.0), ("luma", 8, "reference", 0.0, 1.0),
    ("chroma", 8, "reference", 0.25, 0.0), ("chroma", 16, "reference", 1.0, 0.0),
    ("luma", 2, "both", 0.0, 0.5), ("luma", 4, "both", 1.0, 0.0),
    ("chroma", 8, "both", 0.1, 0.0))
#: the five bands of the first pyramid (checkpoints without ``bands`` have these, with their
#: one ``activity``)
PYRAMID_V1 = PYRAMID_BANDS[:5]
#: channels of every pyramid band
PYRAMID_BAND_CHANNELS = 2
#: pyramid σ² per kind: luma GMSD's c (170 on 0..255 for the magnitude, halved per component),
#: chroma 130 on 0..255 (docs/model.md)
PYRAMID_SIGMA2 = {"luma": 85 / 255 ** 2, "chroma": 130 / 255 ** 2}
ACTIVITIES = ("reference", "both")
#: upsampling factors of ``ModelConfig.input_scale`` (2 keeps every stride an integer)
INPUT_SCALES = (1, 2)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the network. Saved in every checkpoint and bundle.

    The defaults are the conv trunk (``frontend="fixed"``); ``ModelConfig.pyramid()`` is the
    fixed multi-scale front end that the default model uses: its ``bands`` (``PYRAMID_BANDS``)
    fix the channels (2 per band), strides, initial σ, activity and label-free weights, with
    ``window`` 1, what measured best on the tune split (``benchmarks/frontend_search.py``).
    Checkpoints written before ``activity`` existed load as the trunk they are; pyramid
    checkpoints written before ``bands`` existed as the five bands of ``PYRAMID_V1``.
    """

    channels: tuple[int, ...] = (32, 64, 96, 128)
    stem_channels: int = 24
    frontend: Literal["fixed", "learned", "pyramid"] = "fixed"
    window: int = 5
    gamma_init: float = 2.0
    #: fixed front end: gain of the value (DC) maps and of the two chroma channels
    #: (docs/model.md: 0.25 / 0.5 beat 1 / 1 by ~0.04 label-free SRCC at initialisation)
    dc_weight: float = 0.25
    chroma_weight: float = 0.5
    #: content activity of the trunk's masking (and of pre-``bands`` pyramids): from the
    #: reference's content code only (METHOD.md; the default), or the sum of both images'
    activity: Literal["reference", "both"] = "reference"
    #: pyramid bands (``PYRAMID_BANDS``); empty for the trunk
    bands: tuple[tuple[str, int, str, float, float], ...] = ()
    #: the images are upsampled by this factor (bilinear) before the encoder, so every band
    #: sits one octave finer: 2 for screen content, whose text strokes are gone at /2 (chosen
    #: per domain by ``calibrate``, docs/calibration.md)
    input_scale: int = 1

    @classmethod
    def pyramid(cls, bands=PYRAMID_BANDS) -> "ModelConfig":
        """The default model's architecture: the fixed pyramid (docs/model.md)."""
        bands = tuple(tuple(b) for b in bands)
        return cls(channels=(PYRAMID_BAND_CHANNELS,) * len(bands), frontend="pyramid",
                   window=1, bands=bands)

    @classmethod
    def named(cls, frontend: str) -> "ModelConfig":
        """The architecture of a front end by name: "pyramid", "fixed" or "learned"."""
        from cdiqa.errors import ConfigError, describe

        if frontend not in ("pyramid", "fixed", "learned"):
            raise ConfigError(describe("Front end", "option", "frontend", frontend,
                                       "'pyramid', 'fixed' or 'learned'", "Pick one"))
        return cls.pyramid() if frontend == "pyramid" else cls(frontend=frontend)

    def __post_init__(self) -> None:
        from cdiqa.errors import ConfigError, describe

        if self.input_scale not in INPUT_SCALES:
            raise ConfigError(describe("Input scale", "model config", "input_scale",
                                       self.input_scale, f"one of {INPUT_SCALES}",
                                       "Pick one of them"))
        if self.frontend != "pyramid":
            return
        want = (PYRAMID_BAND_CHANNELS,) * len(self.bands)
        if not self.bands or tuple(self.channels) != want:
            raise ConfigError(describe("Channels", "model config", "pyramid", self.channels,
                                       want, "Build it with ModelConfig.pyramid(bands)"))
        for b in self.bands:
            ok = (len(b) == 5 and b[0] in PYRAMID_SIGMA2 and b[1] in (2, 4, 8, 16)
                  and b[2] in ACTIVITIES and min(b[3], b[4]) >= 0 and b[3] + b[4] > 0)
            if not ok:
                raise ConfigError(describe("Band", "model config", "pyramid", b,
                                           "(luma|chroma, 2|4|8|16, reference|both, "
                                           "mean weight >= 0, std weight >= 0)",
                                           "Fix the band"))

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each masking scale (band) relative to the input image."""
        own = (tuple(b[1] for b in self.bands) if self.frontend == "pyramid"
               else TRUNK_STRIDES[:len(self.channels)])
        return tuple(st // self.input_scale for st in own)

    @property
    def activities(self) -> tuple[str, ...]:
        """Content activity of each masking scale: "reference" or "both"."""
        if self.frontend == "pyramid":
            return tuple(b[2] for b in self.bands)
        return (self.activity,) * len(self.channels)

    def energy_weights(self) -> tuple[float, ...] | None:
        """Per-feature weights of the label-free energy (v = [means, stds]); None: the
        head's default (every (pooling, scale) block alike, deviations only)."""
        if self.frontend != "pyramid":
            return None
        n = PYRAMID_BAND_CHANNELS
        mean = [b[3] / n for b in self.bands for _ in range(n)]
        std = [b[4] / n for b in self.bands for _ in range(n)]
        return tuple(mean + std)

    def head_layout(self) -> dict:
        """What fitting a head needs to know of this model's features: ``channels`` per
        scale and the label-free ``weights`` (keyword arguments of ``cdiqa.model.fit_heads``'
        ``fit_label_free`` and ``fit_few_shot``)."""
        return {"channels": self.channels, "weights": self.energy_weights()}

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of ``to_dict``."""
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        if d.get("frontend") == "pyramid" and "bands" not in d:
            d["bands"] = tuple((*b[:2], d.get("activity", "reference"), *b[3:])
                               for b in PYRAMID_V1)
        d["bands"] = tuple(tuple(b) for b in d.get("bands", ()))
        return cls(**d)


class PyramidEncoder(nn.Module):
    """φ of ``frontend="pyramid"``: fixed YIQ bands at /2 to /16 (``ModelConfig.bands``).

    Nothing is learned here: HaarPSI, MDSI and GMSD, the strongest training-free metrics on
    KADID-like distortions, compare exactly such fine-scale luma gradients and coarse chroma
    (they filter a 2x-downsampled image too). Replicate padding keeps flat borders flat. A
    band listed twice (two activities) is the same map.
    """

    def __init__(self, bands) -> None:
        super().__init__()
        self.bands = tuple((k, st) for k, st, *_ in bands)
        self.deepest = max(st for _, st in self.bands)
        self.register_buffer("colour", torch.tensor(_YIQ).view(3, 3, 1, 1))
        sx = torch.tensor([[3.0, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
        self.register_buffer("gradients", torch.stack([sx, sx.t()]).unsqueeze(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = F.conv2d(x, self.colour)
        luma, chroma = y[:, :1], y[:, 1:]
        bands = {}
        for stride in (st for st in (2, 4, 8, 16) if st <= self.deepest):
            luma, chroma = F.avg_pool2d(luma, 2), F.avg_pool2d(chroma, 2)
            if ("luma", stride) in self.bands:
                bands[("luma", stride)] = F.conv2d(
                    F.pad(luma, (1, 1, 1, 1), mode="replicate"), self.gradients)
            bands[("chroma", stride)] = chroma
        return [bands[b] for b in self.bands]


class FixedFrontEnd(nn.Module):
    """RGB -> LMN opponent colour, then per channel [value, d/dx, d/dy] (Scharr): 9 maps.

    Not trained: gradient features in an opponent space are what the strongest training-free
    FR metrics (GMSD, VSI, MDSI) are built on, so the learned layers start from them.
    ``dc_weight`` scales the value maps and ``chroma_weight`` both chroma channels: vision
    adapts to the mean level (Weber) and resolves chroma more coarsely than luminance, so the
    luminance gradients should dominate what the first learned layer sees.
    """

    out_channels = 9

    def __init__(self, dc_weight: float = 1.0, chroma_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("colour", torch.tensor(_OPPONENT).view(3, 3, 1, 1))
        sx = torch.tensor([[3.0, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
        ident = torch.zeros(3, 3)
        ident[1, 1] = dc_weight
        bank = torch.stack([ident, sx, sx.t()])  # (3, 3, 3)
        weight = torch.zeros(9, 3, 3, 3)
        for c in range(3):
            weight[3 * c: 3 * c + 3, c] = bank * (1.0 if c == 0 else chroma_weight)
        self.register_buffer("filters", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, self.colour), self.filters, padding=1)


class LearnedFrontEnd(nn.Module):
    """A plain learned 3x3 conv, the baseline that the fixed front end is measured against."""

    out_channels = 9

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """φ: front end, stem (/2) and 4 stages (/4, /8, /16, /32); returns the 4 stage maps."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.front = (FixedFrontEnd(cfg.dc_weight, cfg.chroma_weight) if cfg.frontend == "fixed"
                      else LearnedFrontEnd())
        self.stem = _conv(self.front.out_channels, cfg.stem_channels, 2)
        cins = (cfg.stem_channels,) + cfg.channels[:-1]
        self.stages = nn.ModuleList(
            nn.Sequential(_conv(ci, co, 2), _conv(co, co)) for ci, co in zip(cins, cfg.channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(self.front(x))
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class Decoder(nn.Module):
    """G_s(c, d) ≈ φ_s: the light decoder used for factual and counterfactual reconstruction."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, channels, 1))

    def forward(self, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([c, d], dim=1))


MaskingOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class Masking(nn.Module):
    """Learned parameters of one scale's masking: γ >= 1, σ > 0, non-negative 1x1 mixing W."""

    def __init__(self, channels: int, window: int, gamma_init: float, sigma_init: float = 0.1,
                 identity_mix: bool = False) -> None:
        super().__init__()
        self.window = window
        # γ = 1 + softplus(raw) keeps |e|^γ differentiable at e = 0
        self.gamma_raw = nn.Parameter(torch.full((channels,), _softplus_inv(gamma_init - 1)))
        self.sigma_raw = nn.Parameter(torch.full((channels,), _softplus_inv(sigma_init - 1e-4)))
        eye = torch.eye(channels)
        # identity_mix: W = I to float precision (softplus(-30) ~ 1e-13), so each channel is
        # masked by its own activity as in the prototype that chose the pyramid
        self.mix_raw = nn.Parameter(eye * (_softplus_inv(1.0) + 30) - 30 if identity_mix
                                    else eye * 4 - 4)

    @property
    def gamma(self) -> torch.Tensor:
        return 1 + F.softplus(self.gamma_raw)

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.sigma_raw) + 1e-4

    def activity(self, c_ref: torch.Tensor, c_dist: torch.Tensor | None = None) -> torch.Tensor:
        """a = W |c(R)|^γ, or W (|c(R)|^γ + |c(D)|^γ) when ``c_dist`` is given; non-negative."""
        w = F.softplus(self.mix_raw)
        g = self.gamma.view(1, -1, 1, 1)
        act = c_ref.abs().pow(g) if c_dist is None else c_ref.abs().pow(g) + c_dist.abs().pow(g)
        return F.conv2d(act, w[:, :, None, None])

    def forward(self, e: torch.Tensor, c_ref: torch.Tensor, op: MaskingOp,
                c_dist: torch.Tensor | None = None) -> torch.Tensor:
        return op(e, self.activity(c_ref, c_dist), self.gamma, self.sigma, self.window)


def _softplus_inv(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(float(y)))))


class Codes(NamedTuple):
    """Per-scale encoder maps and codes of one image."""

    phi: list[torch.Tensor]
    content: list[torch.Tensor]
    degradation: list[torch.Tensor]


class Stats(NamedTuple):
    """Masking statistics of a pair over all scales, each (B, D)."""

    sums: torch.Tensor
    sumsq: torch.Tensor
    counts: torch.Tensor


class CDIQA(nn.Module):
    """The full model. ``forward(ref, dist, roi)`` returns the masking ``Stats``."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        pyramid = cfg.frontend == "pyramid"
        self.encoder = PyramidEncoder(cfg.bands) if pyramid else Encoder(cfg)
        ch = cfg.channels
        self.content_heads = nn.ModuleList(nn.Conv2d(c, c, 1) for c in ch)
        self.degradation_heads = nn.ModuleList(nn.Conv2d(c, c, 1) for c in ch)
        self.decoders = nn.ModuleList(Decoder(c) for c in ch)
        sigmas = ([PYRAMID_SIGMA2[b[0]] ** 0.5 for b in cfg.bands] if pyramid
                  else [0.1] * len(ch))
        self.masking = nn.ModuleList(Masking(c, cfg.window, cfg.gamma_init, s, pyramid)
                                     for c, s in zip(ch, sigmas))
        if pyramid:  # codes start as the bands themselves: e = φ(D) - φ(R), c = φ
            with torch.no_grad():
                for head in (*self.content_heads, *self.degradation_heads):
                    head.weight.copy_(torch.eye(head.in_channels)[:, :, None, None])
                    head.bias.zero_()

    @property
    def feature_dim(self) -> int:
        """Length of v: 2 x (sum of channels)."""
        return 2 * sum(self.cfg.channels)

    def codes(self, x: torch.Tensor) -> Codes:
        """Encoder maps and content/degradation codes of one batch of images."""
        if self.cfg.input_scale != 1:
            x = F.interpolate(x, scale_factor=float(self.cfg.input_scale), mode="bilinear",
                              align_corners=False)
        phi = self.encoder(x)
        content = [h(p) for h, p in zip(self.content_heads, phi)]
        degradation = [h(p) for h, p in zip(self.degradation_heads, phi)]
        return Codes(phi, content, degradation)

    def stats_from_codes(self, ref: Codes, dist: Codes, roi: torch.Tensor | None,
                         size: tuple[int, int], op: MaskingOp = tm.masking_stats) -> Stats:
        """Masking statistics from the two images' codes, restricted to ``roi`` if given."""
        sums, sumsq, counts = [], [], []
        for s, (mask_mod, cr, dr, dd) in enumerate(
                zip(self.masking, ref.content, ref.degradation, dist.degradation)):
            weight = roi_mask(roi, size, self.cfg.strides[s], dd.shape)
            c_dist = dist.content[s] if self.cfg.activities[s] == "both" else None
            st = mask_mod(dd - dr if weight is None else (dd - dr) * weight, cr, op, c_dist)
            sums.append(st[:, 0])
            sumsq.append(st[:, 1])
            n = (dd.shape[2] * dd.shape[3]) if weight is None else weight.sum(dim=(2, 3))
            counts.append(torch.ones_like(st[:, 0]) * n)
        return Stats(torch.cat(sums, 1), torch.cat(sumsq, 1), torch.cat(counts, 1))

    def forward(self, ref: torch.Tensor, dist: torch.Tensor, roi: torch.Tensor | None = None,
                op: MaskingOp = tm.masking_stats) -> Stats:
        """Masking statistics of (ref, dist) pairs; ``op`` selects the masking implementation."""
        size = (ref.shape[2], ref.shape[3])
        return self.stats_from_codes(self.codes(ref), self.codes(dist), roi, size, op)

    def features(self, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """v (B, 2D) of whole images."""
        return tm.features_from_stats(*self(ref, dist))


def with_input_scale(model: CDIQA, scale: int) -> CDIQA:
    """A copy of ``model`` that upsamples its inputs by ``scale`` (same parameters)."""
    from dataclasses import replace

    out = CDIQA(replace(model.cfg, input_scale=int(scale)))
    out.load_state_dict(model.state_dict())
    return out.train(model.training)


def roi_mask(roi: torch.Tensor | None, size: tuple[int, int], stride: int,
             shape: torch.Size) -> torch.Tensor | None:
    """(B, 1, h, w) indicator of the feature pixels whose input cells meet ``roi``.

    roi is (B, 4) integer [y0, x0, y1, x1) in input pixels; feature pixel i covers input rows
    [i*stride, (i+1)*stride). Tiles aligned to 32 pixels therefore partition every scale.
    """
    if roi is None:
        return None
    roi = roi.to(torch.int64)
    h, w = shape[2], shape[3]
    rows = torch.arange(h, device=roi.device).view(1, h)
    cols = torch.arange(w, device=roi.device).view(1, w)
    y0, x0 = roi[:, 0:1] // stride, roi[:, 1:2] // stride
    y1, x1 = (roi[:, 2:3] + stride - 1) // stride, (roi[:, 3:4] + stride - 1) // stride
    in_rows = ((rows >= y0) & (rows < y1)).to(torch.float32)
    in_cols = ((cols >= x0) & (cols < x1)).to(torch.float32)
    return (in_rows[:, None, :, None] * in_cols[:, None, None, :])


def load_model(path, map_location: str = "cpu") -> CDIQA:
    """Load a checkpoint or weights file written by ``save_model`` or training."""
    blob = read_checkpoint(path, map_location)
    model = CDIQA(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["model"])
    return model.eval()


def write_checkpoint(path, config: dict, state: dict, **extra):
    """Write ``{"config": config, "model": state, **extra}`` atomically: what
    ``read_checkpoint`` and ``load_model`` read. The one place cdiqa writes a checkpoint."""
    from cdiqa.files import atomic_write

    blob = {"config": config, "model": state, **extra}
    return atomic_write(path, lambda f: torch.save(blob, f))


def read_checkpoint(path, map_location: str = "cpu") -> dict:
    """The dict a checkpoint holds, unpickled with ``weights_only`` (tensors and plain data;
    nothing in the file runs). The one place cdiqa unpickles a file.

    Raises:
        ConfigError: the file needs code to load (a hostile or foreign pickle), is not a
            torch checkpoint, or holds no ``config``/``model``.
    """
    import pickle
    import re

    from cdiqa.errors import ConfigError, describe

    fix = "Pass a checkpoint written by `iqa-export train` or `iqa-export export`"
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text advises weights_only=False, i.e. running the file's code: not quoted
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        got = (f"a pickle that calls {found.group(1)} (code, not weights)" if found
               else "a file that is not a weights-only pickle")
        raise ConfigError(describe("Content", "checkpoint", path, got,
                                   "tensors and plain data only", "cdiqa never runs code from "
                                   f"a checkpoint, so it was not loaded. {fix}")) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        raise ConfigError(describe("Format", "checkpoint", path, f"a file torch cannot read "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                                   "a torch checkpoint", fix)) from None
    if not isinstance(blob, dict) or not {"config", "model"} <= set(blob):
        raise ConfigError(describe("Content", "checkpoint", path, type(blob).__name__ if not
                                   isinstance(blob, dict) else f"keys {sorted(map(str, blob))}",
                                   "a dict with 'config' and 'model'", fix))
    return blob
