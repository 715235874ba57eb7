"""The domain head of ``calibrate``: the candidate that ranks unseen images of the domain best.

::

    calibration ladder (references x degradations x levels, known severity)
          │ features of the (adapted) model
          ▼
    candidates          bundle    the bundle's own head, unchanged
                        label-free  refitted: the domain's feature scale (``fit_label_free``)
                        ranked p    per-feature weights fitted to the ladder's known order,
                                    prior p in ``RANKED_PRIORS`` (``fit_ranked``)
                        signed p    max(w . x, 0.1 |w| . x), w of either sign, fitted to
                                    that order, prior p in ``SIGNED_PRIORS`` (``fit_signed``)
          │ each scored leave-one-source-image-out: fitted on the other images' ladders;
          │ held-out SRCC against -severity, pooled and within each degradation
          ▼
    the simplest candidate within MARGIN of the best mean of the two, refitted on the whole
    ladder

No opinion score is read: the ladder's order is the generator's (``DistortionType.severity``),
which also says how the domain's degradations compare at equal level. Measured on the
cross-domain benchmark, cross-validated (docs/benchmarks.md): the label-free refit alone had
screen content 0.556 against the bundle head's 0.711; the choice reaches 0.873 (0.970 with
``calibrate``'s input scale 2), neutron 0.710 -> 0.785, and keeps the bundle's head on
medical.

Why the mean of pooled and within-degradation SRCC: the pooled SRCC also asks that level k of
one degradation be as bad as level k of another (the generator's convention), and on a few
images a signed head can buy that by scrambling each degradation's own order (medical's US1
fold: pooled +0.03, within -0.06, and worse on the held-out image). Measured with
calibrate's adaptation (docs/benchmarks.md, "Sixth session"): neutron 0.796 -> 0.862 with
the signed heads, underwater 0.917, medical 0.731, screen content 0.969 -> 0.924 (a signed
head at scale 1 won 2 folds by a hair).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

#: priors of the ranked candidates (strength pulling each log-weight to the label-free one)
RANKED_PRIORS = (0.03, 0.003)
#: priors of the signed candidates (strength pulling w to 0, features in units of spread)
SIGNED_PRIORS = (0.1, 0.03)
#: a fitted candidate must beat a simpler one by this much cross-validated SRCC to be chosen
#: (one swapped pair moves the SRCC of a few dozen held-out pairs by about 0.01; measured on
#: medical, where the ranked head's 0.003 lead over the bundle's head reversed on unseen
#: images)
MARGIN = 0.01
#: fit(v, severity) -> head
Fit = Callable[[np.ndarray, np.ndarray], object]


@dataclass(frozen=True)
class HeadChoice:
    """The chosen head, its name, and every candidate's cross-validated SRCC: pooled
    (``srcc``), mean within each degradation (``within``) and the mean of both (``score``,
    what the choice compares)."""

    head: object
    name: str
    srcc: dict[str, float]
    within: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> dict[str, float]:
        return {k: (v + self.within.get(k, v)) / 2 for k, v in self.srcc.items()}

    @property
    def best(self) -> float:
        """The best candidate's ``score`` (-1 when nothing was cross-validated)."""
        return max(self.score.values(), default=-1.0)

    def describe(self) -> str:
        """One line for the calibration report."""
        others = ", ".join(f"{k} {v:.3f}/{self.within.get(k, v):.3f}"
                           for k, v in self.srcc.items())
        return (f"domain head: {self.name}, chosen by leave-one-image-out SRCC on the "
                f"calibration ladder (pooled/within each degradation: {others})")


def candidates(base, layout: dict, v_unlabelled: np.ndarray | None = None) -> dict[str, Fit]:
    """name -> fit(v, severity) of every candidate (``base``: the bundle's head or None)."""
    from cdiqa.model import fit_heads as fit

    extra = [] if v_unlabelled is None or len(v_unlabelled) == 0 else [v_unlabelled]
    out: dict[str, Fit] = {}
    if base is not None:
        out["bundle"] = lambda v, sev: base
    out["label-free"] = lambda v, sev: fit.fit_label_free(np.concatenate([v, *extra]), **layout)
    unlabelled = extra[0] if extra else None
    for p in RANKED_PRIORS:
        out[f"ranked {p:g}"] = (lambda p: lambda v, sev: fit.fit_ranked(
            v, sev, prior=p, v_unlabelled=unlabelled, **layout))(p)
    for p in SIGNED_PRIORS:
        out[f"signed {p:g}"] = (lambda p: lambda v, sev: fit.fit_signed(
            v, sev, prior=p, v_unlabelled=unlabelled))(p)
    return out


def cross_validated(fit_one: Fit, v: np.ndarray, severity: np.ndarray, groups: np.ndarray,
                    kinds=None) -> tuple[float, float]:
    """SRCC against -severity of each group's rows, scored by a fit on the others: pooled,
    and the mean over ``kinds`` (each row's degradation; None: one kind) of the SRCC within
    each."""
    from cdiqa import metrics
    from cdiqa.model.ladder import srcc_within

    scores = np.zeros(len(v))
    for g in dict.fromkeys(groups):
        test = groups == g
        scores[test] = fit_one(v[~test], severity[~test]).score(v[test])
    kinds = np.zeros(len(v), int) if kinds is None else np.asarray(kinds)
    within = srcc_within(kinds, scores, -severity).values()
    return float(metrics.srcc(scores, -severity)), float(np.mean(list(within)))


def choose_head(v: np.ndarray, severity: np.ndarray, groups, *, base, layout: dict,
                kinds=None, v_unlabelled: np.ndarray | None = None) -> HeadChoice:
    """The candidate with the best cross-validated SRCC, fitted on all of ``v``.

    ``groups`` name each row's source image and ``kinds`` its degradation; with fewer than
    two groups, nothing can be held out and the label-free refit is kept (what ``calibrate``
    did before the choice existed). The first candidate (fewest fitted numbers first) within
    ``MARGIN`` of the best mean of pooled and within-degradation SRCC wins.
    """
    groups = np.asarray(groups)
    fits = candidates(base, layout, v_unlabelled)
    if len(set(groups.tolist())) < 2:
        return HeadChoice(fits["label-free"](v, severity), "label-free", {})
    cv = {name: cross_validated(f, v, severity, groups, kinds) for name, f in fits.items()}
    scored = HeadChoice(None, "", {k: p for k, (p, _) in cv.items()},
                        {k: w for k, (_, w) in cv.items()})
    best = next(k for k, x in scored.score.items() if x >= scored.best - MARGIN)
    return replace(scored, head=fits[best](v, severity), name=best)
