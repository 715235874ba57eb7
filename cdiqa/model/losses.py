r"""The annotation-free training losses (METHOD.md items 3-5).

For a reference R and distorted versions D of it, with per-scale encoder maps φ_s, content
codes c_s, degradation codes d_s and decoders G_s (``cdiqa.model.network.Codes``)::

    content          Σ_s  nl2(c_s(D), sg c_s(R))                     content survives distortion
    factual          Σ_s  nl2(G_s(c_s(X), d_s(X)), sg φ_s(X))        X = R and X = D
    counterfactual   Σ_s  nl2(G_s(c_s(R), d_s(D)), sg φ_s(D))        do(c := c(R))
                        + nl2(G_s(c_s(D), d_s(R)), sg φ_s(R))        do(d := d(R))
    collapse         Σ_s  relu(ρ(φ_s) - ρ(d_s))      ρ(x) = sqrt(nl2(x(D), x(R)))
    ranking          relu(m - (S(D_hi) - S(D_lo)))   S = severity_from_features(v)
    consistency      var of S over crops that share one (type, level, noise seed)

``nl2(a, b) = ||a - b||² / (mean_batch ||b||² + ε)`` per sample (normalized L2), averaged;
``sg`` is stop-gradient: targets are detached, so no loss can be met by shrinking or
collapsing the thing it compares against. The collapse guard asks the degradation code to
move, relative to its size, at least as much as the encoder map moves: a constant d(·) pays
ρ(φ) > 0 for every distorted pair. The ranking loss uses only the generator's level order
(level l+1 of one image and type is worse than level l), never an opinion score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from cdiqa.model.network import Codes

EPS = 1e-8

#: ``G_s(c, d) -> φ_s``, one per scale
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss in the total; ``margin`` is the ranking margin on S."""

    content: float = 1.0
    factual: float = 1.0
    counterfactual: float = 1.0
    collapse: float = 1.0
    ranking: float = 1.0
    consistency: float = 0.0
    margin: float = 0.1

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)


def nl2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalized squared L2 distance per sample, ||a - b||² / (mean_batch ||b||² + ε), (B,).

    The denominator is the batch mean rather than each sample's own energy: a flat crop
    whose maps are near zero would otherwise turn a tiny error into a huge loss.
    """
    dims = tuple(range(1, a.dim()))
    return (a - b).pow(2).sum(dims) / (b.pow(2).sum(dims).mean() + EPS)


def content_loss(ref: Codes, dist: Codes) -> torch.Tensor:
    """Content invariance: c(D) ≈ c(R), reference side detached. 0 iff c(D) == c(R)."""
    return torch.stack([nl2(cd, cr.detach()).mean()
                        for cr, cd in zip(ref.content, dist.content)]).sum()


def factual_loss(decoders: Sequence[Decode], *codes: Codes) -> torch.Tensor:
    """Reconstruction G(c(X), d(X)) ≈ φ(X) for every image X given."""
    return torch.stack([nl2(g(c, d), p.detach()).mean()
                        for x in codes for g, p, c, d in zip(decoders, x.phi, x.content,
                                                             x.degradation)]).sum()


def counterfactual_loss(decoders: Sequence[Decode], ref: Codes, dist: Codes) -> torch.Tensor:
    """Interventions: G(c(R), d(D)) ≈ φ(D) and G(c(D), d(R)) ≈ φ(R).

    Zero for a model whose content code is the same for R and D and whose decoder rebuilds φ
    from (c, d) exactly; positive when the content code carries the distortion.
    """
    parts = []
    for g, pr, pd, cr, cd, dr, dd in zip(decoders, ref.phi, dist.phi, ref.content,
                                         dist.content, ref.degradation, dist.degradation):
        parts.append(nl2(g(cr, dd), pd.detach()).mean() + nl2(g(cd, dr), pr.detach()).mean())
    return torch.stack(parts).sum()


def _relative_change(r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    # + EPS inside the root: its gradient stays finite when d(D) == d(R) (identity levels)
    return (nl2(d, r) + EPS).sqrt()


def collapse_loss(ref: Codes, dist: Codes) -> torch.Tensor:
    """Guard against a degradation code that ignores the distortion (d ≡ const).

    Per scale, relu(ρ(φ) - ρ(d)) with ρ(x) = sqrt(nl2(x(D), x(R))) the relative change,
    the encoder side detached: > 0 whenever φ moves and d moves less (a constant d pays
    ρ(φ)), 0 once d tracks the distortion at least as strongly as φ does.
    """
    return torch.stack([F.relu(_relative_change(pr, pd).detach()
                               - _relative_change(dr, dd)).mean()
                        for pr, pd, dr, dd in zip(ref.phi, dist.phi, ref.degradation,
                                                  dist.degradation)]).sum()


def severity_from_features(v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Training severity S (B,): mean over features of log(v + ε); larger = more degraded.

    A log, so that the ranking margin is a ratio and scaling every feature up does not help.
    """
    return torch.log(v + eps).mean(dim=1)


def ranking_loss(sev_milder: torch.Tensor, sev_stronger: torch.Tensor, margin: float,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Margin ranking: the stronger level must exceed the milder by ``margin``.

    ``valid`` (B,) bool drops pairs whose two images are identical (nothing to order).
    0 when every valid pair is ordered with the margin; > 0 when one is not.
    """
    loss = F.relu(margin - (sev_stronger - sev_milder))
    if valid is None:
        return loss.mean()
    w = valid.to(loss.dtype)
    return (loss * w).sum() / w.sum().clamp_min(1.0)


def consistency_loss(severity: torch.Tensor, group: int) -> torch.Tensor:
    """Variance of S within each run of ``group`` samples that share one distortion.

    The same (type, level, noise) on different content should read as one degradation.
    0 when the severities of every group agree; > 0 otherwise (and always 0 for group 1).
    """
    s = severity.view(-1, group)
    return (s - s.mean(dim=1, keepdim=True)).pow(2).mean()
