"""Cross-domain benchmark, cross-validated: every source image of a domain held out once.

    python benchmarks/domains_cv.py [--domains screen medical] [--steps 300] [--json OUT]

``benchmarks/domains.py`` holds out one fixed quarter of each domain's images (20-60 pairs
from 2-4 images, where one swapped pair moves SRCC by ~0.01). Here each source image (group)
is held out in turn: the model is adapted label-free on the others (``adapt``, the recipe of
``calibrate``), the input scale and domain head chosen on their ladders (``calibrate``'s
``domain_model_and_head``: the bundle's head, the label-free refit or a ranked head, at
input scale 1 or 2, by leave-one-image-out SRCC), and
the held-out image's ladder scored; the held-out scores of all folds are pooled into one
SRCC against -severity. Two more rows: the natural model with a domain head chosen the same
way, and per fold whichever of the two (adapted or natural) has the better cross-validated
SRCC on the fold's calibration ladder (biased towards the adapted model, which saw those
images).
Each row also gets a 95% interval of the pooled SRCC over bootstrap resamples of the source
images, and the per-kind SRCC (KADID's per-type SRCC): the pooled SRCC also asks that level k
of one kind be as bad as level k of another, which is the generator's convention, not a
measurement; per kind asks only for each kind's own order.
Scores come from the torch model (the runtime agrees within ``tolerance("onnx_score")``).
Only images of at least 176 px per side are used, so MS-SSIM runs on every pair.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, machine, write_text  # noqa: E402

DOMAINS = ("underwater", "medical", "screen", "neutron")
RESAMPLES = 1000
MIN_SIDE = 176  # MS-SSIM's smallest image


def cross_validate(domain: str, steps: int, log=print, seed: int = 2) -> dict:
    """Pooled held-out SRCC of natural, adapted (CV) and the metrics on ``domain``; ``seed``
    draws the held-out ladders' noise (the reported tables use 2)."""
    import torch

    from cdiqa import metrics
    from cdiqa.calibration.adapt import adapt
    from cdiqa.calibration.bundle import domain_model_and_head, head_references
    from cdiqa.calibration.domains import domain_samples
    from cdiqa.model.distortions import degradations_for
    from cdiqa.model.ladder import ladder, metric_scores, per_kind_srcc, resample_groups
    from cdiqa.model.scoring import pair_features, resolve_head, resolve_model

    torch.set_num_threads(1)
    model, natural = resolve_model(None), resolve_head(None)
    samples, kinds = domain_samples(domain), degradations_for(domain)
    refs = [r for r in samples.references if min(r.image.shape[:2]) >= MIN_SIDE]
    groups = np.array([r.group for r in refs])
    lad = ladder([r.image for r in refs], kinds, names=[r.name for r in refs], seed=seed)
    row_group, pairs = groups[lad.ref_index], lad.pairs()
    adapted, refit, guarded = np.zeros(len(lad)), np.zeros(len(lad)), np.zeros(len(lad))
    v_base = pair_features(model, pairs)
    for g in dict.fromkeys(groups):
        t0 = time.perf_counter()
        cal = [r for r in samples.references if r.group != g]
        tuned = adapt(model, [r.image for r in cal], kinds, steps=steps, seed=0).model
        rows = np.flatnonzero(row_group == g)
        fold = {}
        for name, m in (("adapted", tuned), ("natural", model)):
            m, choice, notes = domain_model_and_head(m, head_references(cal, kinds), kinds,
                                                     base=natural, seed=1)
            v_rows = (v_base[rows] if m is model
                      else pair_features(m, [pairs[i] for i in rows]))
            # the head's cross-validated SRCC on the calibration ladder (its known order, no
            # opinion score): what a guard may use
            fold[name] = (choice.best, choice.head.score(v_rows))
            log(f"{domain}: held out {g}, {name} model: " + "; ".join(notes))
        adapted[rows], refit[rows] = fold["adapted"][1], fold["natural"][1]
        guarded[rows] = max(fold.values(), key=lambda x: x[0])[1]
        log(f"{domain}: held out {g} ({len(rows)} pairs, {time.perf_counter() - t0:.0f} s)")
    scores = {"natural model": natural.score(v_base),
              "natural model, chosen head (CV)": refit,
              "calibrate: adapted, chosen head (CV)": adapted,
              "adapted or natural by calibration CV": guarded, **metric_scores(lad)}
    target = -lad.severity
    boot = resample_groups(row_group, RESAMPLES, seed=0)
    srcc = {k: float(metrics.srcc(sc, target)) for k, sc in scores.items()}
    interval = {k: [float(x) for x in np.percentile([metrics.srcc(sc[i], target[i])
                                                     for i in boot], [2.5, 97.5])]
                for k, sc in scores.items()}
    return {"domain": domain, "pairs": len(lad), "images": len(set(groups)), "srcc": srcc,
            "interval": interval,
            "per_kind": {k: per_kind_srcc(lad, sc) for k, sc in scores.items()}}


def to_markdown(results: list[dict]) -> str:
    """One row per domain, best in bold; the interval under each pooled SRCC when known."""
    names = list(results[0]["srcc"])
    lines = ["| domain | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in results:
        best = max(r["srcc"].values())
        cells = []
        for k, v in r["srcc"].items():
            cell = f"**{v:.3f}**" if v == best else f"{v:.3f}"
            if k in r.get("interval", {}):
                lo, hi = r["interval"][k]
                cell += f" [{lo:.2f}, {hi:.2f}]"
            cells.append(cell)
        lines.append(f"| {r['domain']} ({r['pairs']} pairs, {r['images']} images) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_kind_markdown(results: list[dict]) -> str:
    """One row per (domain, kind): each method's SRCC within the kind, best in bold."""
    names = list(results[0]["per_kind"])
    lines = ["| domain | kind | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for r in results:
        kinds = list(r["per_kind"][names[0]])
        for kind in (*kinds, "mean"):
            vals = {n: (float(np.mean(list(r["per_kind"][n].values()))) if kind == "mean"
                        else r["per_kind"][n][kind]) for n in names}
            best = max(vals.values())
            cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals.values()]
            lines.append(f"| {r['domain']} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    ap.add_argument("--steps", type=int, default=300, help="adaptation steps per fold")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--seed", type=int, default=2,
                    help="seed of the held-out ladders' noise (another draw of the same images)")
    args = ap.parse_args(argv)
    header = machine()
    results = [cross_validate(d, args.steps, lambda m: print(m, file=sys.stderr, flush=True),
                              seed=args.seed)
               for d in args.domains]
    text = (f"Machine: {header}. Command: `{command_line(__file__, argv)}`.\n\n"
            + "Pooled SRCC against the generator's severity, [95% interval over the source "
            "images]:\n\n" + to_markdown(results)
            + "\n\nSRCC within each kind (the kind's own order only):\n\n"
            + per_kind_markdown(results))
    print(text)
    if args.json:
        write_text(args.json, json.dumps({"machine": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
