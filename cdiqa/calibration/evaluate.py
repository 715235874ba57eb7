"""Cross-domain benchmark: the natural model, the adapted one and training-free metrics.

Per domain, on the held-out references of ``calibrate``'s split (never adapted or calibrated
on), each distorted by every degradation of the domain at levels 1..5::

    natural model        the bundle's default graph and head (no adaptation)
    adapted              the domain's graph and head written by ``calibrate`` (label-free)
    adapted INT8 / FP16  its reduced-precision graphs, when present
    PSNR ... VSI         the training-free metrics (``metrics.METRICS``, lower-is-better negated)

Reported: SRCC against the known severity order (``-Ladder.severity``) over all held-out
pairs pooled, the mean over degradations of the SRCC within each (``ladder.per_kind_srcc``:
the pooled SRCC also asks that level k of one degradation be as bad as level k of another,
the generator's convention; per degradation asks only for each one's own order), the
fraction of (reference, degradation) sequences scored monotonically
(``ladder.monotone``), and for domains with real pairs (underwater raw vs enhanced, medical
lossy vs lossless DICOM) the SRCC on the real ladder ``ref + t (dist - ref)``, t = 0.2..1
(``ladder.real_ladder``). All scores come from the torch-free runtime (ONNX Runtime), as
deployed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable

from cdiqa import metrics
from cdiqa.model.ladder import (Ladder, ladder, metric_scores, monotone, per_kind_srcc,
                                real_ladder)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Row:
    """One method on one domain."""

    srcc: float
    monotone: float
    #: SRCC within each degradation of the ladder
    srcc_per_kind: dict[str, float]
    srcc_real: float | None = None

    @property
    def srcc_kind_mean(self) -> float:
        """Mean SRCC within a degradation."""
        return sum(self.srcc_per_kind.values()) / len(self.srcc_per_kind)


@dataclass(frozen=True)
class DomainEval:
    """The benchmark of one domain: ``rows[method]``."""

    domain: str
    pairs: int
    references: int
    real_pairs: int
    rows: dict[str, Row]

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)


def _row(lad: Ladder, scores, real: Ladder | None, real_scores) -> Row:
    r = None if real is None else metrics.srcc(real_scores, -real.severity)
    return Row(metrics.srcc(scores, -lad.severity), monotone(lad, scores),
               per_kind_srcc(lad, scores), r)


def held_out_ladders(domain: str, *, holdout: float = 0.25, seed: int = 0
                     ) -> tuple[Ladder, Ladder | None]:
    """(synthetic ladder of the held-out references, real ladder or None) of a built-in
    domain, with ``calibrate``'s split and ladder seed."""
    from cdiqa.calibration.bundle import split
    from cdiqa.calibration.domains import domain_samples
    from cdiqa.model.distortions import degradations_for

    samples = domain_samples(domain)
    _, held = split(samples, holdout, "built-in samples")
    lad = ladder([r.image for r in held], degradations_for(domain),
                 names=[r.name for r in held], seed=seed + 2)
    real = real_ladder(samples.real_pairs) if samples.real_pairs else None
    return lad, real


def evaluate_domain(bundle: str | os.PathLike, domain: str, *, threads: int | None = None,
                    progress: Progress | None = None) -> DomainEval:
    """Benchmark ``bundle`` on the built-in held-out samples of ``domain``."""
    from cdiqa.calibration.gate import runtime_scores
    from cdiqa.manifest import load_manifest

    manifest = load_manifest(bundle)
    lad, real = held_out_ladders(domain)
    report = progress or (lambda *a: None)
    methods = [("natural model", manifest.default_domain, "fp32")]
    tag = "natural model" if domain == manifest.default_domain else "adapted"
    if domain in manifest.domains and domain != manifest.default_domain:
        methods.append(("adapted (label-free)", domain, "fp32"))
    models = manifest.domain_models.get(domain)
    for p in ("int8", "fp16"):
        if domain in manifest.domains and models is not None and p in models.files:
            methods.append((f"{tag} {p.upper()}", domain, p))
    rows = {}
    for i, (name, d, p) in enumerate(methods):
        s = runtime_scores(bundle, d, p, lad.pairs(), threads)
        rs = runtime_scores(bundle, d, p, real.pairs(), threads) if real else None
        rows[name] = _row(lad, s, real, rs)
        report("models", i + 1, len(methods))
    ms = metric_scores(lad)
    mr = metric_scores(real) if real else {}
    for name, s in ms.items():
        rows[name] = _row(lad, s, real, mr.get(name))
    report("metrics", 1, 1)
    return DomainEval(domain, len(lad), len(lad.refs), 0 if real is None else len(real.refs),
                      rows)


def to_markdown(results: list[DomainEval]) -> str:
    """One table: a row per (domain, method)."""
    lines = ["| domain | method | SRCC (ladder) | SRCC per degradation (mean) | monotone | "
             "SRCC (real ladder) |", "|---|---|---|---|---|---|"]
    for res in results:
        best = max(r.srcc for r in res.rows.values())
        best_kind = max(r.srcc_kind_mean for r in res.rows.values())
        for name, r in res.rows.items():
            s = f"**{r.srcc:.3f}**" if r.srcc == best else f"{r.srcc:.3f}"
            k = r.srcc_kind_mean
            k = f"**{k:.3f}**" if k == best_kind else f"{k:.3f}"
            real = "" if r.srcc_real is None else f"{r.srcc_real:.3f}"
            lines.append(f"| {res.domain} ({res.pairs} pairs) | {name} | {s} | {k} | "
                         f"{100 * r.monotone:.0f}% | {real} |")
    return "\n".join(lines)
