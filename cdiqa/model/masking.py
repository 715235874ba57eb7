"""The masking op in torch: the decomposed form that the network trains with and that exports
to standard ONNX ops (AveragePool with count_include_pad=0, Pow, Div, ReduceSum).

Same math as ``cdiqa.masking`` (the reference); tests check the two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cdiqa.masking import STD_EPS, check_window


def box_mean(a: torch.Tensor, k: int) -> torch.Tensor:
    """k x k box mean, zero padding, divided by the count of valid pixels."""
    k = check_window(k)
    return F.avg_pool2d(a, k, stride=1, padding=k // 2, count_include_pad=False)


def masking_map(e: torch.Tensor, a: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor,
                k: int) -> torch.Tensor:
    """The masked degradation map n = |e|^g / (s^g + P_k(a)) (B, C, H, W), before pooling."""
    g = gamma.view(1, -1, 1, 1)
    return e.abs().pow(g) / (sigma.view(1, -1, 1, 1).pow(g) + box_mean(a, k))


def masking_stats(e: torch.Tensor, a: torch.Tensor, gamma: torch.Tensor, sigma: torch.Tensor,
                  k: int) -> torch.Tensor:
    """(B, 2, C): per-channel sum and sum of squares of n (``masking_map``)."""
    n = masking_map(e, a, gamma, sigma, k)
    return torch.stack([n.sum(dim=(2, 3)), (n * n).sum(dim=(2, 3))], dim=1)


def features_from_stats(sums: torch.Tensor, sumsq: torch.Tensor,
                        counts: torch.Tensor) -> torch.Tensor:
    """v = [mean, std] (B, 2D), as ``cdiqa.masking.features_from_stats``."""
    mean = sums / counts
    var = (sumsq / counts - mean * mean).clamp_min(0)
    std = (var + STD_EPS).sqrt() - STD_EPS ** 0.5
    return torch.cat([mean, std], dim=1)
