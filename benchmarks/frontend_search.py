"""The pyramid's design choices, measured: variants chosen on the tune split, shown on test.

    iqa-export fetch-devset      # once
    python benchmarks/frontend_search.py [--refs DIR]

Renders the development benchmark's pairs (``cdiqa.model.evaluate.render_pairs``: 13 KADID
types x 5 levels on whole 512 x 384 references), computes each variant's features with the
real network (``ModelConfig.pyramid()`` with one setting changed, untrained), fits the
label-free head on the tune pairs (no label read) and prints tune and test SRCC, SRCC per KADID
category on test, and HaarPSI on the same pairs. Then the leave-category-out check of the
choice itself: for each category, the variant with the best tune SRCC *without* that category
scores that category's test pairs. docs/model.md records the result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, machine, utc_now  # noqa: E402


def variants():
    """name -> (ModelConfig, label-free weights or None for the head's block default)."""
    from cdiqa.model.network import PYRAMID_BANDS, PYRAMID_V1, ModelConfig

    def pyramid(bands):
        cfg = ModelConfig.pyramid(bands)
        return cfg, cfg.energy_weights()

    first, added = PYRAMID_V1, PYRAMID_BANDS[len(PYRAMID_V1):]
    return {
        "pyramid (default, 9 bands)": pyramid(PYRAMID_BANDS),
        "first pyramid (5 bands, 2026-12-01)": pyramid(PYRAMID_V1),
        "first pyramid, head block weights": (ModelConfig.pyramid(PYRAMID_V1), None),
        "without chroma /16": pyramid(first + added[1:]),
        "without the similarity bands": pyramid(first + added[:1]),
        "first pyramid, activity from both images": pyramid(
            [(k, st, "both", mw, sw) for k, st, _, mw, sw in PYRAMID_V1]),
    }


def scores(cfg, weights, test, tune):
    """Label-free scores of the test and tune pairs (head fitted on tune)."""
    import torch

    from cdiqa.model import fit_heads as fit
    from cdiqa.model.network import CDIQA
    from cdiqa.model.scoring import pair_features

    torch.manual_seed(0)
    model = CDIQA(cfg).eval()
    v_test = pair_features(model, test.pairs(), len(test))
    v_tune = pair_features(model, tune.pairs(), len(tune))
    head = fit.fit_label_free(v_tune, channels=cfg.channels, weights=weights)
    return head.score(v_test), head.score(v_tune)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=Path, default=None, help="fetched development set")
    args = p.parse_args(argv)

    from cdiqa import metrics
    from cdiqa.model.evaluate import (EvalConfig, category_srcc, render_pairs,
                                      split_references)

    cfg = EvalConfig(refs=str(args.refs) if args.refs else None)
    test = render_pairs(split_references("test", cfg), cfg)
    tune = render_pairs(split_references("tune", cfg), cfg)
    haar = np.array([metrics.haarpsi(r, d) for r, d in test.pairs()])
    results = {name: scores(c, w, test, tune) for name, (c, w) in variants().items()}
    cats = list(category_srcc(test, haar))
    print(f"- machine: {machine()}\n- date: {utc_now()}\n- command: "
          f"`{command_line(__file__, argv)}`\n")
    print("| variant | tune SRCC | test SRCC | " + " | ".join(cats) + " |")
    print("|---" * (len(cats) + 3) + "|")
    for name, (s_test, s_tune) in list(results.items()) + [("HaarPSI", (haar, None))]:
        tune_r = f"{metrics.srcc(s_tune, tune.mos):.3f}" if s_tune is not None else "—"
        per = category_srcc(test, s_test)
        print(f"| {name} | {tune_r} | {metrics.srcc(s_test, test.mos):.3f} | "
              + " | ".join(f"{per[c]:.3f}" for c in cats) + " |")
    held = np.zeros(len(test))
    tune_cats, test_cats = tune.categories, test.categories
    for c in cats:
        best = max(results, key=lambda n: metrics.srcc(results[n][1][tune_cats != c],
                                                       tune.mos[tune_cats != c]))
        held[test_cats == c] = results[best][0][test_cats == c]
        print(f"\nheld out {c}: chose '{best}'", end="")
    print(f"\n\nleave-category-out choice: pooled test SRCC {metrics.srcc(held, test.mos):.3f}, "
          f"mean within categories {np.mean(list(category_srcc(test, held).values())):.3f} "
          f"(HaarPSI {metrics.srcc(haar, test.mos):.3f} / "
          f"{np.mean(list(category_srcc(test, haar).values())):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
