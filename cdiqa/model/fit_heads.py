"""Fitting the quality heads of ``cdiqa.heads`` on feature vectors (METHOD.md item 8).

=============  ==========================================================================
kind           fit
=============  ==========================================================================
label_free     s = mean of v over the pairs; x = log1p(v / s); then either the first principal
               component of x standardized per feature ("pca"), the RMS of x ("energy"), or
               the norm of x whitened on its top principal components ("whitened"). No
               label is read. tau = median severity / ln 2.
ranked         the label-free energy with one weight per feature fitted to rank pairs of
               known severity (a degradation ladder, pooled over references and
               degradations; no opinion score), the same ranking loss and prior as few_shot.
               A label-free head (its JSON kind): calibrate's domain head candidate.
signed         max(w . x, 0.1 |w| . x), w of either sign, fitted to the same ranking
               (``fit_signed``): a band's error can then count against another's (blur lowers
               a gradient, noise raises it), which a weighted energy cannot. Also a domain
               head candidate.
few_shot       "energy" (default): the label-free energy with one log-weight per block,
               fitted to rank the k labelled pairs (logistic loss on pairs of pairs, a
               Gaussian prior pulling the log-weights to 0), then scaled to the target
               t = -ln((mos - lo) / (hi - lo)). "ridge": regression without intercept of t
               on [x . w, x P] (P: top principal directions), ridge strength by
               leave-one-reference-out CV and the one-standard-error rule.
supervised     a tanh MLP with h(0) = 0 and weights >= 0, so monotone in every feature (see
               ``cdiqa.heads.SupervisedHead``), trained on t by full-batch Adam with weight
               decay (torch; the result is numpy arrays).
=============  ==========================================================================

No intercept anywhere: every head's severity is 0 exactly at v = 0, so identical images
score 1.0 whatever the fit.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Callable, Literal, Sequence

import numpy as np

from cdiqa.errors import ConfigError, describe
from cdiqa.heads import FewShotHead, Head, LabelFreeHead, SupervisedHead, write_head

Kind = Literal["label_free", "few_shot", "supervised"]
#: lowest rescaled opinion score a target can reach: ln(1/0.02) bounds the severity target
Q_FLOOR = 0.02
RIDGE_GRID = tuple(10.0 ** e for e in np.arange(-4, 4.5, 0.5))
#: label-free default: spatial deviations only (measured, docs/model.md)
DEFAULT_POOLING = "std"


def _check_features(v: np.ndarray, name: str = "v") -> np.ndarray:
    v = np.asarray(v, np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ConfigError(describe("Shape", "features", name, v.shape, "(N >= 2, D)",
                                   "Fit on at least two pairs"))
    if not np.all(np.isfinite(v)):
        raise ConfigError(describe("Values", "features", name, "NaN or inf", "finite values",
                                   "Check the pairs"))
    return v


def _per_pair(x, n: int, what: str, name: str, fix: str) -> np.ndarray:
    """``x`` as float64 (n,): one value per pair, else ``ConfigError`` naming ``name``."""
    x = np.asarray(x, np.float64)
    if x.shape != (n,):
        raise ConfigError(describe(what, "argument", name, x.shape, (n,), fix))
    return x


def _check_labels(mos, n: int, what: str) -> np.ndarray:
    return _per_pair(mos, n, "Labels", "mos", f"Give one opinion score per {what}")


def _with_tau(head: LabelFreeHead, v: np.ndarray) -> LabelFreeHead:
    """``head`` with tau from the severities of its own fitting pairs ``v``."""
    return replace(head, tau=_tau(head.severity(v)))


def _probe(v: np.ndarray, transform: str) -> tuple[np.ndarray, LabelFreeHead]:
    """The fitting pairs' feature scale, and a head that only maps v to x = t(v / s)."""
    scale = feature_scale(v)
    return scale, LabelFreeHead(scale=scale, transform=transform, weights=np.zeros(v.shape[1]))


#: mean below which a feature counts as unused by the fitting pairs (its scale becomes 1)
UNUSED_FEATURE = 1e-6


def feature_scale(v: np.ndarray) -> np.ndarray:
    """Per-feature scale s > 0: the mean over pairs, 1 where a feature is (nearly) always 0.

    "Nearly": a mean below ``UNUSED_FEATURE``. The pyramid's chroma features on grayscale
    images (medical, neutron) are float-rounding noise, ~1e-12; divided by their own mean they
    would weigh as much as the luma features and turn the score into noise (measured: a medical
    head refit dropped the ladder SRCC from 0.688 to 0.368).
    """
    s = np.asarray(v, np.float64).mean(axis=0)
    return np.where(s > UNUSED_FEATURE, s, 1.0)


def _pca(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-m principal directions (D, m) and variances (m,) of the rows of x."""
    xc = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    m = min(m, vt.shape[0])
    return vt[:m].T, sv[:m] ** 2 / max(1, x.shape[0] - 1)


def _tau(g: np.ndarray) -> float:
    med = float(np.median(g))
    return med / math.log(2) if med > 0 else 1.0


def block_ids(dim: int, channels: Sequence[int] | None) -> np.ndarray:
    """Block of each feature of v = [mean (D), std (D)]: one per (pooling, scale).

    ``channels`` are the channels per scale (``ModelConfig.channels``); None: one block per
    pooling half.
    """
    half = dim // 2
    channels = tuple(channels) if channels else (half,)
    if sum(channels) != half:
        raise ConfigError(describe("Channels", "argument", "channels", channels,
                                   f"channels per scale summing to {half}",
                                   "Pass the model's ModelConfig.channels"))
    scale = np.concatenate([np.full(c, i) for i, c in enumerate(channels)])
    return np.concatenate([scale, scale + len(channels)])


def energy_weights(dim: int, channels: Sequence[int] | None = None,
                   pooling: Literal["both", "std"] = "std",
                   weights: Sequence[float] | None = None) -> np.ndarray:
    """Weights of the label-free energy: every (pooling, scale) block counts equally.

    A plain RMS would let the coarse scales (most channels) outvote the fine ones; here each
    block sums to the same weight. ``pooling="std"`` keeps only the spatial standard
    deviations (the deviation pooling of GMSD). ``weights`` (per feature, from the model:
    ``ModelConfig.energy_weights()``) replace both rules when given.
    """
    if weights is not None:
        w = np.asarray(weights, np.float64)
        if w.shape != (dim,) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError(describe("Weights", "label-free head", "weights", w.shape,
                                       f"({dim},) non-negative, not all 0",
                                       "Pass the model's ModelConfig.energy_weights()"))
        return w / w.sum()
    ids = block_ids(dim, channels)
    w = 1.0 / np.bincount(ids)[ids]
    if pooling == "std":
        w[: dim // 2] = 0.0
    return w / w.sum()


def fit_label_free(v: np.ndarray, method: Literal["pca", "energy", "whitened"] = "energy",
                   transform: Literal["log1p", "identity"] = "log1p",
                   components: int = 8, channels: Sequence[int] | None = None,
                   pooling: Literal["both", "std"] = "std",
                   weights: Sequence[float] | None = None) -> LabelFreeHead:
    """Label-free head on unlabeled features v (N, D).

    The default, a scale-balanced energy of the deviation features, measured best on the
    KADID-13 development benchmark (docs/model.md). ``channels`` (the model's channels per
    scale) and ``pooling`` apply to "energy" only.
    """
    v = _check_features(v)
    scale, base = _probe(v, transform)
    x = base.features(v)
    if method == "pca":
        sd = x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        u, _ = _pca(x / sd, 1)
        w = u[:, 0] / sd
        w = w if np.mean(x @ w) >= 0 else -w  # distorted pairs project positive
    elif method == "energy":
        w = energy_weights(v.shape[1], channels, pooling, weights)
    elif method == "whitened":
        u, var = _pca(x, components)
        w = u / np.sqrt(np.maximum(var, 1e-12 * var.max()))
    else:
        raise ConfigError(describe("Method", "label-free head", method, method,
                                   "'pca', 'energy' or 'whitened'", "Pick one"))
    return _with_tau(LabelFreeHead(scale=scale, transform=transform, weights=w, method=method),
                     v)


def fit_ranked(v: np.ndarray, severity: np.ndarray, *, prior: float,
               v_unlabelled: np.ndarray | None = None,
               transform: Literal["log1p", "identity"] = "log1p",
               channels: Sequence[int] | None = None,
               weights: Sequence[float] | None = None) -> LabelFreeHead:
    """Label-free energy head whose per-feature weights rank the pairs by known severity.

    ``severity`` (N,) is each pair's known severity rank (``Ladder.severity``: higher is
    worse), compared across every pair, so the fit also sets how the domain's degradations
    weigh against each other at equal level. Features the label-free weights leave at 0 stay
    at 0. ``v_unlabelled`` (pairs of unknown severity) only join the feature scale. The result
    is a ``LabelFreeHead`` (tau: median severity over ln 2), so identical images score 1.0.
    """
    v = _check_features(v)
    sev = _per_pair(severity, len(v), "Severity", "severity", "Give one known severity per pair")
    v_all = v if v_unlabelled is None else np.concatenate([v, _check_features(v_unlabelled)])
    scale, probe = _probe(v_all, transform)
    w = energy_weights(v.shape[1], channels, DEFAULT_POOLING, weights)
    w = _ranked_weights(probe.features(v), -sev, w, np.arange(v.shape[1]), prior)
    return _with_tau(LabelFreeHead(scale=scale, transform=transform, weights=w,
                                   method="energy"), v_all)


#: floor of the signed head (``LabelFreeHead.floor``): without it 23 of neutron's 225 held-out
#: ladder pairs scored exactly 1.0, as if undistorted
SIGNED_FLOOR = 0.1


def fit_signed(v: np.ndarray, severity: np.ndarray, *, prior: float,
               v_unlabelled: np.ndarray | None = None,
               transform: Literal["log1p", "identity"] = "log1p") -> LabelFreeHead:
    """Linear head g = max(w . x, f |w| . x), w of either sign, ranking pairs by known severity.

    The logistic ranking loss of ``fit_ranked`` on w . x over every pair of pairs of unequal
    severity, plus ``prior`` times the squared norm of w with each feature in units of its
    spread (so the prior does not depend on the features' scales). The head's severity is
    floored at ``SIGNED_FLOOR`` |w| . x. No intercept, so identical images still score 1.0
    and only they do; ``v_unlabelled`` only joins the feature scale and tau. Measured on
    neutron, cross-validated (docs/benchmarks.md): pooled 0.796 -> 0.862 as calibrate's
    choice, where the energy of sign-blind errors cannot weigh blur against noise.
    """
    from scipy.optimize import minimize

    v = _check_features(v)
    sev = _per_pair(severity, len(v), "Severity", "severity", "Give one known severity per pair")
    v_all = v if v_unlabelled is None else np.concatenate([v, _check_features(v_unlabelled)])
    scale, probe = _probe(v_all, transform)
    x = probe.features(v)
    i, j, sign = _ranked_pairs(-sev)
    if len(i) == 0:  # nothing to rank: the label-free energy
        return fit_label_free(v_all, "energy", transform=transform)
    spread = x.std(axis=0) + 1e-9
    f, n = SIGNED_FLOOR, len(x)

    def loss(w):  # the head's own severity, floor included (a kink where the floor takes over)
        a, b = x @ w, f * (x @ np.abs(w))
        signed = a >= b
        g = np.where(signed, a, b)
        z = RANK_SHARPNESS * sign * (g[j] - g[i])
        dz = -(0.5 - 0.5 * np.tanh(z / 2)) * RANK_SHARPNESS * sign / len(z)  # d loss / d g_j
        dg = np.bincount(j, dz, n) - np.bincount(i, dz, n)
        grad = x.T @ (dg * signed) + f * np.sign(w) * (x.T @ (dg * ~signed))
        return (float(np.mean(np.logaddexp(0.0, -z)) + prior * np.sum((w * spread) ** 2)),
                grad + 2 * prior * w * spread ** 2)

    # from 0: a feature that never varies (chroma on gray images) keeps weight 0
    w = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x
    return _with_tau(LabelFreeHead(scale=scale, transform=transform, weights=w,
                                   method="linear", floor=SIGNED_FLOOR), v_all)


def _ranked_pairs(mos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, sign) over every pair of rows with unequal ``mos``; sign > 0 when i is better."""
    i, j = np.triu_indices(len(mos), 1)
    keep = mos[i] != mos[j]
    return i[keep], j[keep], np.sign(mos[i[keep]] - mos[j[keep]])


def severity_target(mos: np.ndarray, mos_range: tuple[float, float]) -> np.ndarray:
    """t = -ln(q), q = (mos - lo) / (hi - lo) clipped to [Q_FLOOR, 1]: 0 for the best score."""
    lo, hi = mos_range
    if not hi > lo:
        raise ConfigError(describe("Range", "option", "mos_range", mos_range, "lo < hi",
                                   "Give the scale's worst and best score"))
    q = np.clip((np.asarray(mos, np.float64) - lo) / (hi - lo), Q_FLOOR, 1.0)
    return -np.log(q)


def _ridge(r: np.ndarray, t: np.ndarray, lam: float, pen: np.ndarray) -> np.ndarray:
    a = r.T @ r + lam * np.diag(pen) + 1e-12 * np.eye(r.shape[1])
    return np.linalg.solve(a, r.T @ t)


def _ridge_cv(r: np.ndarray, t: np.ndarray, free: int = 0,
              groups: np.ndarray | None = None) -> np.ndarray:
    """Ridge coefficients (no intercept), the strength chosen by cross-validation.

    Folds are the ``groups`` (leave one reference out) when there are at least 3 of them,
    else single pairs (leave one out). Of the strengths within one standard error of the
    least CV error, the strongest is kept (the one-standard-error rule): with few labels the
    head then stays close to what needs no label. The first ``free`` columns are not
    penalized.
    """
    pen = np.ones(r.shape[1])
    pen[:free] = 0.0
    groups = np.arange(len(t)) if groups is None or len(np.unique(groups)) < 3 else groups
    folds = [groups == g for g in np.unique(groups)]
    errs = []
    for lam in RIDGE_GRID:
        fold_err = []
        for test in folds:
            coef = _ridge(r[~test], t[~test], lam, pen)
            fold_err.append(float(np.mean((r[test] @ coef - t[test]) ** 2)))
        errs.append((np.mean(fold_err), np.std(fold_err) / np.sqrt(len(folds))))
    best = int(np.argmin([e for e, _ in errs]))
    limit = errs[best][0] + errs[best][1]
    pick = max(i for i, (e, _) in enumerate(errs) if e <= limit and i >= best)
    return _ridge(r, t, RIDGE_GRID[pick], pen)


def fit_few_shot(v_all: np.ndarray, v_labelled: np.ndarray, mos: np.ndarray, *,
                 groups: np.ndarray | None = None, components: int = 8,
                 mos_range: tuple[float, float] = (1.0, 5.0),
                 transform: Literal["log1p", "identity"] = "log1p",
                 channels: Sequence[int] | None = None,
                 weights: Sequence[float] | None = None,
                 form: Literal["energy", "ridge"] = "energy",
                 prior: float | None = None) -> FewShotHead:
    """Few-shot head fitted on k labelled pairs (``v_labelled``, ``mos``).

    "energy" (the default): the label-free energy sqrt(w . x²) with one log-weight per
    (pooling, scale) block, fitted to rank the labelled pairs as their scores do (logistic
    loss over all pairs of pairs) under a Gaussian prior of strength ``prior`` pulling every
    log-weight to 0, the label-free head. A ranking loss needs no link between severity and
    score, and with few labels the head stays the label-free one; then one scale maps the
    energy to the severity target. Measured on the development benchmark (docs/model.md):
    above label-free in every draw of 50 labels.

    "ridge": reduced features [x . w, x P] (P: top principal directions of all pairs), x . w
    free and the rest ridge-penalized, the strength by cross-validation over ``groups``.
    """
    v_all, v_lab = _check_features(v_all, "v_all"), _check_features(v_labelled, "v_labelled")
    mos = _check_labels(mos, len(v_lab), "labelled pair")
    scale, probe = _probe(v_all, transform)
    w = energy_weights(v_all.shape[1], channels, DEFAULT_POOLING, weights)
    t = severity_target(mos, mos_range)
    if form == "energy":
        blocks = block_ids(v_all.shape[1], channels)
        w = _ranked_weights(probe.features(v_lab), mos, w, blocks,
                            RANK_PRIOR if prior is None else prior)
        e = np.sqrt((probe.features(v_lab) ** 2) @ w)
        beta = float(e @ t / max(e @ e, 1e-300))
        return FewShotHead(scale=scale, transform=transform, coef=np.array([max(beta, 1e-12)]),
                           mos_range=tuple(mos_range), form="energy", weights=w)
    x = probe.features(v_all)
    p, _ = _pca(x, components)
    p = np.concatenate([w[:, None], p], axis=1)
    r = probe.features(v_lab) @ p
    sd = r.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    groups = None if groups is None else np.asarray(groups)
    coef = _ridge_cv(r / sd, t, free=1, groups=groups) / sd
    if coef[0] <= 0:  # the labels reversed the label-free ordering: keep that ordering alone
        coef = np.zeros_like(coef)
        coef[0] = max(float(_ridge(r[:, :1], t, 0.0, np.zeros(1))[0]), 1e-12)
    return FewShotHead(scale=scale, transform=transform, projection=p, coef=coef,
                       mos_range=tuple(mos_range))


#: strength of the few-shot ranking head's prior on its log-weights (chosen on the tune
#: split, labels from half its references scoring the other half: 0.01 / 0.03 / 0.1 gained
#: +0.001 / +0.003 / +0.002 SRCC over label-free, 0.003 lost 0.005; docs/model.md)
RANK_PRIOR = 0.03
#: sharpness of the logistic ranking loss on log severities
RANK_SHARPNESS = 5.0


def _ranked_weights(x: np.ndarray, mos: np.ndarray, w: np.ndarray, blocks: np.ndarray,
                    prior: float) -> np.ndarray:
    """w re-weighted by exp(theta) per block, theta minimizing the ranking loss + prior."""
    from scipy.optimize import minimize

    used = np.unique(blocks[w > 0])
    energy = np.stack([(x[:, blocks == b] ** 2) @ w[blocks == b] for b in used], axis=1)
    i, j, sign = _ranked_pairs(mos)
    if len(i) == 0:  # every label equal: nothing to rank, keep the label-free weights
        return w

    def loss(theta):
        g = 0.5 * np.log(energy @ np.exp(theta) + 1e-30)
        z = RANK_SHARPNESS * sign * (g[j] - g[i])  # > 0 when the better pair is less severe
        return float(np.mean(np.logaddexp(0.0, -z)) + prior * theta @ theta)

    # bounded: a weight may shrink or grow by e^20 at most (exp overflows long before
    # the loss would notice)
    theta = minimize(loss, np.zeros(len(used)), method="L-BFGS-B",
                     bounds=[(-20.0, 20.0)] * len(used)).x
    out = w.copy()
    for b, th in zip(used, theta):
        out[blocks == b] *= np.exp(th)
    return out / out.sum()


def fit_supervised(v: np.ndarray, mos: np.ndarray, *, hidden: int = 32, steps: int = 2000,
                   weight_decay: float = 1e-3, lr: float = 1e-2, seed: int = 0,
                   mos_range: tuple[float, float] = (1.0, 5.0),
                   transform: Literal["log1p", "identity"] = "log1p") -> SupervisedHead:
    """Small monotone MLP head on (v, mos), full-batch Adam; deterministic for a seed.

    Both weight matrices are kept >= 0 (softplus of free parameters), so the severity never
    falls when any masked-degradation feature grows. Measured on the development benchmark:
    SRCC 0.865 -> 0.882 and sequences monotone in level 73 % -> 100 % against the same MLP
    with free signs.
    """
    import torch

    v = _check_features(v)
    mos = _check_labels(mos, len(v), "pair")
    scale, probe = _probe(v, transform)
    x = torch.from_numpy(probe.features(v))
    t = torch.from_numpy(severity_target(mos, mos_range))
    gen = torch.Generator().manual_seed(seed)
    # softplus(-3 + noise) ~ 0.05: small positive first-layer weights, scaled by 1/sqrt(D)
    raw1 = (torch.randn(v.shape[1], hidden, generator=gen, dtype=torch.float64) - 3
            ).requires_grad_()
    b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    raw2 = (torch.randn(hidden, generator=gen, dtype=torch.float64) - 1).requires_grad_()
    opt = torch.optim.Adam([raw1, b1, raw2], lr=lr)
    softplus = torch.nn.functional.softplus

    def weights():
        return softplus(raw1) / math.sqrt(v.shape[1]), softplus(raw2)

    for _ in range(steps):
        w1, w2 = weights()
        h = torch.tanh(x @ w1 + b1) - torch.tanh(b1)
        loss = ((h @ w2 - t) ** 2).mean() + weight_decay * (w1.pow(2).sum() + w2.pow(2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    w1, w2 = (w.detach().numpy() for w in weights())
    return SupervisedHead(scale=scale, transform=transform, w1=w1, b1=b1.detach().numpy(),
                          w2=w2, mos_range=tuple(mos_range))


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
    model = resolve_model(checkpoint)
    v = file_features(model, pairs.paths(), progress)
    layout = model.cfg.head_layout()
    if kind == "label_free":
        head: Head = fit_label_free(v, **layout)
    elif kind == "few_shot":
        refs = np.array([str(r) for r, _ in pairs.paths()])[labelled]
        head = fit_few_shot(v, v[labelled], mos, groups=refs, **layout)
    else:
        head = fit_supervised(v, mos)
    write_head(head, out)
    return head
