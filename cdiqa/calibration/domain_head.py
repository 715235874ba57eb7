"""The domain head of ``calibrate``: the candidate that ranks unseen images of the domain best.

::

    calibration ladder (references x degradations x levels, known severity)
          │ features of the (adapted) model
          ▼
    candidates          bundle    the bundle's own head, unchanged
                        label-free  refitted: the domain's feature scale (``fit_label_free``)
                        ranked p    per-feature weights fitted to the ladder's known order,
                                    prior p in ``RANKED_PRIORS`` (``fit_ranked``)
          │ each scored leave-one-source-image-out: fitted on the other images' ladders,
          │ pooled SRCC of the held-out ladders against -severity
          ▼
    the simplest candidate within MARGIN of the best, refitted on the whole ladder

No opinion score is read: the ladder's order is the generator's (``DistortionType.severity``),
which also says how the domain's degradations compare at equal level. Measured on the
cross-domain benchmark, cross-validated (docs/benchmarks.md): the label-free refit alone had
screen content 0.556 against the bundle head's 0.711; the choice reaches 0.873 (0.970 with
``calibrate``'s input scale 2), neutron 0.710 -> 0.785, and keeps the bundle's head on
medical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: priors of the ranked candidates (strength pulling each log-weight to the label-free one)
RANKED_PRIORS = (0.03, 0.003)
#: a fitted candidate must beat a simpler one by this much cross-validated SRCC to be chosen
#: (one swapped pair moves the SRCC of a few dozen held-out pairs by about 0.01; measured on
#: medical, where the ranked head's 0.003 lead over the bundle's head reversed on unseen
#: images)
MARGIN = 0.01
#: fit(v, severity) -> head
Fit = Callable[[np.ndarray, np.ndarray], object]


@dataclass(frozen=True)
class HeadChoice:
    """The chosen head, its name, and every candidate's cross-validated SRCC."""

    head: object
    name: str
    srcc: dict[str, float]

    def describe(self) -> str:
        """One line for the calibration report."""
        others = ", ".join(f"{k} {v:.3f}" for k, v in self.srcc.items())
        return (f"domain head: {self.name}, chosen by leave-one-image-out SRCC on the "
                f"calibration ladder ({others})")


def candidates(base, layout: dict, v_unlabelled: np.ndarray | None = None) -> dict[str, Fit]:
    """name -> fit(v, severity) of every candidate (``base``: the bundle's head or None)."""
    from cdiqa.model import fit_heads as fit

    extra = [] if v_unlabelled is None or len(v_unlabelled) == 0 else [v_unlabelled]
    out: dict[str, Fit] = {}
    if base is not None:
        out["bundle"] = lambda v, sev: base
    out["label-free"] = lambda v, sev: fit.fit_label_free(np.concatenate([v, *extra]), **layout)
    for p in RANKED_PRIORS:
        out[f"ranked {p:g}"] = (lambda p: lambda v, sev: fit.fit_ranked(
            v, sev, prior=p, v_unlabelled=extra[0] if extra else None, **layout))(p)
    return out


def cross_validated(fit_one: Fit, v: np.ndarray, severity: np.ndarray,
                    groups: np.ndarray) -> float:
    """Pooled SRCC against -severity of each group's rows, scored by a fit on the others."""
    from cdiqa import metrics

    scores = np.zeros(len(v))
    for g in dict.fromkeys(groups):
        test = groups == g
        scores[test] = fit_one(v[~test], severity[~test]).score(v[test])
    return float(metrics.srcc(scores, -severity))


def choose_head(v: np.ndarray, severity: np.ndarray, groups, *, base, layout: dict,
                v_unlabelled: np.ndarray | None = None) -> HeadChoice:
    """The candidate with the best cross-validated SRCC, fitted on all of ``v``.

    ``groups`` name each row's source image; with fewer than two, nothing can be held out
    and the label-free refit is kept (what ``calibrate`` did before the choice existed).
    The first candidate (fewest fitted numbers first) within ``MARGIN`` of the best wins.
    """
    groups = np.asarray(groups)
    fits = candidates(base, layout, v_unlabelled)
    if len(set(groups.tolist())) < 2:
        return HeadChoice(fits["label-free"](v, severity), "label-free", {})
    srcc = {name: cross_validated(f, v, severity, groups) for name, f in fits.items()}
    top = max(srcc.values())
    best = next(k for k, v in srcc.items() if v >= top - MARGIN)
    return HeadChoice(fits[best](v, severity), best, srcc)
