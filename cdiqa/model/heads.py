"""Fitting the quality heads of ``cdiqa.heads`` on feature vectors (METHOD.md item 8).

=============  ==========================================================================
kind           fit
=============  ==========================================================================
label_free     s = mean of v over the pairs; x = log1p(v / s); then either the first principal
               component of x standardized per feature ("pca"), the RMS of x ("energy"), or
               the norm of x whitened on its top principal components ("whitened"). No
               label is read. tau = median severity / ln 2.
few_shot       reduced features [x . w, x P] (w: the label-free PCA direction, P: the top-m
               principal directions, both from all pairs, labelled or not); regression
               without intercept of t = -ln((mos - lo) / (hi - lo)) on them, the x . w
               coefficient free and the others ridge-penalized, the strength chosen by exact
               leave-one-out (closed form).
supervised     a tanh MLP with h(0) = 0 (see ``cdiqa.heads.SupervisedHead``) trained on t by
               full-batch Adam with weight decay (torch; the result is numpy arrays).
=============  ==========================================================================

No intercept anywhere: every head's severity is 0 exactly at v = 0, so identical images
score 1.0 whatever the fit.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Callable, Literal

import numpy as np

from cdiqa.errors import ConfigError, describe
from cdiqa.heads import FewShotHead, Head, LabelFreeHead, SupervisedHead, write_head

Kind = Literal["label_free", "few_shot", "supervised"]
#: lowest rescaled opinion score a target can reach: ln(1/0.02) bounds the severity target
Q_FLOOR = 0.02
RIDGE_GRID = tuple(10.0 ** e for e in np.arange(-4, 4.5, 0.5))


def _check_features(v: np.ndarray, name: str = "v") -> np.ndarray:
    v = np.asarray(v, np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ConfigError(describe("Shape", "features", name, v.shape, "(N >= 2, D)",
                                   "Fit on at least two pairs"))
    if not np.all(np.isfinite(v)):
        raise ConfigError(describe("Values", "features", name, "NaN or inf", "finite values",
                                   "Check the pairs"))
    return v


def feature_scale(v: np.ndarray) -> np.ndarray:
    """Per-feature scale s > 0: the mean over pairs (1 where a feature is always 0)."""
    s = np.asarray(v, np.float64).mean(axis=0)
    return np.where(s > 0, s, 1.0)


def _pca(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-m principal directions (D, m) and variances (m,) of the rows of x."""
    xc = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    m = min(m, vt.shape[0])
    return vt[:m].T, sv[:m] ** 2 / max(1, x.shape[0] - 1)


def _tau(g: np.ndarray) -> float:
    med = float(np.median(g))
    return med / math.log(2) if med > 0 else 1.0


def fit_label_free(v: np.ndarray, method: Literal["pca", "energy", "whitened"] = "pca",
                   transform: Literal["log1p", "identity"] = "log1p",
                   components: int = 8) -> LabelFreeHead:
    """Label-free head on unlabeled features v (N, D)."""
    v = _check_features(v)
    scale = feature_scale(v)
    base = LabelFreeHead(scale=scale, transform=transform, weights=np.zeros(v.shape[1]))
    x = base.features(v)
    if method == "pca":
        sd = x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        u, _ = _pca(x / sd, 1)
        w = u[:, 0] / sd
        w = w if np.mean(x @ w) >= 0 else -w  # distorted pairs project positive
    elif method == "energy":
        w = np.zeros(0)
    elif method == "whitened":
        u, var = _pca(x, components)
        w = u / np.sqrt(np.maximum(var, 1e-12 * var.max()))
    else:
        raise ConfigError(describe("Method", "label-free head", method, method,
                                   "'pca', 'energy' or 'whitened'", "Pick one"))
    head = LabelFreeHead(scale=scale, transform=transform, weights=w, method=method)
    g = head.severity(v)
    return LabelFreeHead(scale=scale, transform=transform, weights=w, method=method,
                         tau=_tau(g))


def severity_target(mos: np.ndarray, mos_range: tuple[float, float]) -> np.ndarray:
    """t = -ln(q), q = (mos - lo) / (hi - lo) clipped to [Q_FLOOR, 1]: 0 for the best score."""
    lo, hi = mos_range
    if not hi > lo:
        raise ConfigError(describe("Range", "option", "mos_range", mos_range, "lo < hi",
                                   "Give the scale's worst and best score"))
    q = np.clip((np.asarray(mos, np.float64) - lo) / (hi - lo), Q_FLOOR, 1.0)
    return -np.log(q)


def _ridge_loo(r: np.ndarray, t: np.ndarray, free: int = 0) -> np.ndarray:
    """Ridge coefficients (no intercept) with the strength of least leave-one-out error.

    The first ``free`` columns are not penalized.
    """
    pen = np.ones(r.shape[1])
    pen[:free] = 0.0
    best, best_err = None, np.inf
    for lam in RIDGE_GRID:
        a = r.T @ r + lam * np.diag(pen) + 1e-12 * np.eye(r.shape[1])
        coef = np.linalg.solve(a, r.T @ t)
        hat = np.einsum("ij,ji->i", r, np.linalg.solve(a, r.T))
        resid = (t - r @ coef) / np.maximum(1 - hat, 1e-9)
        err = float(np.mean(resid ** 2))
        if err < best_err:
            best, best_err = coef, err
    return best


def fit_few_shot(v_all: np.ndarray, v_labelled: np.ndarray, mos: np.ndarray, *,
                 components: int = 8, mos_range: tuple[float, float] = (1.0, 5.0),
                 transform: Literal["log1p", "identity"] = "log1p") -> FewShotHead:
    """Few-shot head: the label-free direction plus ridge corrections, fitted on k labels.

    Reduced features are [x . w, x P]: w the label-free PCA direction and P the top
    principal directions, both from all pairs (labelled or not). The coefficient of x . w is
    free (it sets the scale), the others are ridge-penalized, so with few labels the head
    stays the label-free ordering and more labels buy more correction.
    """
    v_all, v_lab = _check_features(v_all, "v_all"), _check_features(v_labelled, "v_labelled")
    mos = np.asarray(mos, np.float64)
    if mos.shape != (v_lab.shape[0],):
        raise ConfigError(describe("Labels", "argument", "mos", mos.shape, (v_lab.shape[0],),
                                   "Give one opinion score per labelled pair"))
    label_free = fit_label_free(v_all, "pca", transform)
    p, _ = _pca(label_free.features(v_all), components)
    p = np.concatenate([label_free.weights[:, None], p], axis=1)
    r = label_free.features(v_lab) @ p
    sd = r.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    coef = _ridge_loo(r / sd, severity_target(mos, mos_range), free=1) / sd
    return FewShotHead(scale=label_free.scale, transform=transform, projection=p, coef=coef,
                       mos_range=tuple(mos_range))


def fit_supervised(v: np.ndarray, mos: np.ndarray, *, hidden: int = 32, steps: int = 2000,
                   weight_decay: float = 1e-3, lr: float = 1e-2, seed: int = 0,
                   mos_range: tuple[float, float] = (1.0, 5.0),
                   transform: Literal["log1p", "identity"] = "log1p") -> SupervisedHead:
    """Small MLP head on (v, mos), full-batch Adam; deterministic for a seed."""
    import torch

    v = _check_features(v)
    mos = np.asarray(mos, np.float64)
    if mos.shape != (v.shape[0],):
        raise ConfigError(describe("Labels", "argument", "mos", mos.shape, (v.shape[0],),
                                   "Give one opinion score per pair"))
    scale = feature_scale(v)
    probe = LabelFreeHead(scale=scale, transform=transform, weights=np.zeros(v.shape[1]))
    x = torch.from_numpy(probe.features(v))
    t = torch.from_numpy(severity_target(mos, mos_range))
    gen = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(v.shape[1], hidden, generator=gen, dtype=torch.float64)
          / math.sqrt(v.shape[1])).requires_grad_()
    b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    w2 = (torch.randn(hidden, generator=gen, dtype=torch.float64) / math.sqrt(hidden)
          ).requires_grad_()
    opt = torch.optim.Adam([w1, b1, w2], lr=lr)
    for _ in range(steps):
        h = torch.tanh(x @ w1 + b1) - torch.tanh(b1)
        loss = ((h @ w2 - t) ** 2).mean() + weight_decay * (w1.pow(2).sum() + w2.pow(2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return SupervisedHead(scale=scale, transform=transform, w1=w1.detach().numpy(),
                          b1=b1.detach().numpy(), w2=w2.detach().numpy(),
                          mos_range=tuple(mos_range))


KINDS = ("label_free", "few_shot", "supervised")


def kind_name(kind: str) -> Kind:
    """Normalize a CLI kind ("label-free") to a head kind ("label_free")."""
    k = str(kind).replace("-", "_")
    if k not in KINDS:
        raise ConfigError(describe("Head kind", "option", "kind", kind,
                                   "label-free, few-shot or supervised", "Pick one"))
    return k  # type: ignore[return-value]


def fit_head_file(kind: str, pairs_csv: str | os.PathLike, out: str | os.PathLike,
                  checkpoint: str | os.PathLike | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Head:
    """Fit a head on the pairs of a CSV (``score`` column for labelled kinds) and write it.

    For few-shot, rows with an empty ``score`` are used unlabelled (for the projection).
    """
    from cdiqa.model.scoring import file_features, read_pairs_file, resolve_model

    kind = kind_name(kind)
    pairs = read_pairs_file(pairs_csv)
    labelled = np.ones(len(pairs.rows), bool)
    if kind != "label_free":  # check the labels before the (slow) features
        labelled = np.array([str(r.get("score") or "").strip() != "" for r in pairs.rows])
        mos = replace(pairs, rows=tuple(r for r, k in zip(pairs.rows, labelled) if k)).scores()
        if kind == "supervised" and not labelled.all():
            raise ConfigError(describe("Labels", "pairs file", pairs.path,
                                       f"{int((~labelled).sum())} rows without a score",
                                       "a score on every row", "Fill in or drop those rows"))
    v = file_features(resolve_model(checkpoint), pairs.paths(), progress)
    if kind == "label_free":
        head: Head = fit_label_free(v)
    elif kind == "few_shot":
        head = fit_few_shot(v, v[labelled], mos)
    else:
        head = fit_supervised(v, mos)
    write_head(head, out)
    return head
