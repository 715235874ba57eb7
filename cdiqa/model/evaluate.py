"""The development benchmark: whole 512 x 384 references, KADID-10k's way, vs classical metrics.

::

    test references (devset "test", 12 photographs) ─► 13 dev types x 5 levels ─► 8-bit pairs
    tune references (devset "tune", disjoint)       ─► the same ─► pairs that fit the heads
    target of a pair = KADID-10k mean opinion score of its (type, level)  (the marginals CSV)

    shipped head       the model's own head, as ``iqa-export score`` uses it
    label-free         fitted on the tune pairs' features, no label read
    few-shot k         k random tune pairs labelled, averaged over ``draws`` random draws
    supervised         every tune pair labelled
    HaarPSI, MDSI, VSI, GMSD, MS-SSIM, SSIM, PSNR on the test pairs of the same run

Reported per method: SRCC, KRCC, PLCC (4-parameter logistic) against the targets, a 95 %
bootstrap interval of SRCC over test references (resampled with replacement, the same draws
for every method), SRCC within each KADID category, and the fraction of (reference, type)
sequences whose score never rises with severity (``ladder.monotone``: the identity-level rule
of ``DistortionType.severity_pairs``).

Leave-category-out folds: every fitted head is fitted again once per KADID category of the
development types, on the tune pairs of the other categories only, and scores the test pairs
of the held category. ``folds`` is the SRCC of those held-out predictions pooled over all
test pairs, ``folds_mean`` the mean of the within-category SRCCs; for methods that fit nothing
they are the same numbers computed on their plain scores. This is the protocol's answer to
"12 KADID types are held out of this project": a head is judged on types it was not fitted on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from cdiqa import metrics
from cdiqa.heads import Head
from cdiqa.model import fit_heads as fit
from cdiqa.model.data import dev_kinds, read_marginals
from cdiqa.model.ladder import (Ladder, ladder, metric_scores, monotone, resample_groups,
                                srcc_within)

Progress = Callable[[str, int, int], None]
#: features of a pair set: (pairs, stage name for progress) -> v (N, D)
Featurizer = Callable[["PairSet", str], np.ndarray]


@dataclass(frozen=True)
class EvalConfig:
    """Options of the benchmark.

    Attributes:
        refs: fetched development set (``iqa-export fetch-devset``); None: the default cache.
        max_refs: use only the first n references of each split (smoke runs).
        bootstrap: resamples of the test references for the SRCC interval.
        supervised_steps: optimiser steps of each supervised MLP fit (7 fits: all + folds).
    """

    refs: str | None = None
    max_refs: int | None = None
    seed: int = 0
    few_shot_k: tuple[int, ...] = (10, 50)
    few_shot_draws: int = 20
    bootstrap: int = 1000
    supervised_steps: int = 2000
    marginals: str | None = None

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)


@dataclass
class PairSet(Ladder):
    """The ladder of one split over the development types, with its targets."""

    mos: np.ndarray  # (N,) KADID marginal of each row's (type, level)

    @property
    def categories(self) -> np.ndarray:
        """KADID category of every row."""
        from cdiqa.model.distortions import kadid_category

        return np.array([kadid_category(k) for k in self.kinds])


def render_pairs(refs: dict[str, np.ndarray], cfg: EvalConfig, stage: str = "render",
                 progress: Progress | None = None) -> PairSet:
    """Distort ``refs`` with the 13 dev types at 5 levels (``ladder.ladder``: 8-bit, seeded
    by name); each row's target is the KADID marginal of its (type, level)."""
    marg = read_marginals(cfg.marginals)
    lad = ladder(list(refs.values()), dev_kinds(cfg.marginals), names=list(refs),
                 seed=cfg.seed, step=_step(progress, stage))
    mos = np.array([marg[(k, int(lv))] for k, lv in zip(lad.kinds, lad.levels)])
    return PairSet(**vars(lad), mos=mos)


def _step(progress: Progress | None, stage: str):
    """``progress`` of one stage as a ``(done, total)`` callback, or None."""
    return None if progress is None else (lambda i, n: progress(stage, i, n))


def bootstrap_rows(pairs: PairSet, n: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n`` resamples of the references (with replacement)."""
    return resample_groups(pairs.ref_index, n, seed)


def category_srcc(pairs: PairSet, scores: np.ndarray) -> dict[str, float]:
    """SRCC against the targets within each KADID category."""
    return srcc_within(pairs.categories, scores, pairs.mos)


def _row(pairs: PairSet, scores: np.ndarray, boot: list[np.ndarray],
         held_out: np.ndarray | None = None) -> dict:
    r = metrics.correlations(scores, pairs.mos)
    draws = [metrics.srcc(scores[i], pairs.mos[i]) for i in boot]
    if draws:
        r["SRCC_lo"], r["SRCC_hi"] = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    r["monotone"] = monotone(pairs, scores)
    r["categories"] = category_srcc(pairs, scores)
    folds = scores if held_out is None else held_out
    r["folds"] = metrics.srcc(folds, pairs.mos)
    r["folds_mean"] = float(np.mean(list(category_srcc(pairs, folds).values())))
    return r


#: label-free variants reported: name -> fit_label_free keyword arguments; "model_weights"
#: asks for the model's own energy weights (``ModelConfig.energy_weights()``)
LABEL_FREE_VARIANTS = {
    "label-free, energy (default: the model's weights)": {"method": "energy", "pooling": "std",
                                                          "model_weights": True},
    "label-free, energy of means and deviations": {"method": "energy", "pooling": "both"},
    "label-free, PCA first component": {"method": "pca"},
}

#: a head fitter: (tune features, tune pairs, rows of the tune set to use) -> head(s)
Fitter = Callable[[np.ndarray, PairSet, np.ndarray], list[Head]]


def _fitters(cfg: EvalConfig, layout: dict) -> dict[str, Fitter]:
    out: dict[str, Fitter] = {}
    for name, variant in LABEL_FREE_VARIANTS.items():
        kw = {k: v for k, v in variant.items() if k != "model_weights"}
        kw["channels"] = layout["channels"]
        if variant.get("model_weights"):
            kw["weights"] = layout["weights"]
        out[name] = lambda v, ps, rows, kw=kw: [fit.fit_label_free(v[rows], **kw)]
    for k in cfg.few_shot_k:
        def few(v, ps, rows, k=k):
            heads = []
            for d in range(cfg.few_shot_draws):
                pick = np.random.default_rng([cfg.seed, k, d]).choice(rows, k, replace=False)
                heads.append(fit.fit_few_shot(v[rows], v[pick], ps.mos[pick],
                                              groups=ps.ref_index[pick], **layout))
            return heads
        out[f"few-shot, k={k} (mean of {cfg.few_shot_draws} draws)"] = few
    out["supervised MLP (every tune pair labelled)"] = (
        lambda v, ps, rows: [fit.fit_supervised(v[rows], ps.mos[rows], seed=cfg.seed,
                                                steps=cfg.supervised_steps)])
    return out


def _mean_rows(rows: list[dict]) -> dict:
    out = {k: float(np.mean([r[k] for r in rows])) for k, v in rows[0].items()
           if isinstance(v, float)}
    out["categories"] = {c: float(np.mean([r["categories"][c] for r in rows]))
                         for c in rows[0]["categories"]}
    if len(rows) > 1:
        out["SRCC_sd"] = float(np.std([r["SRCC"] for r in rows]))
    return out


def head_rows(v_test: np.ndarray, v_tune: np.ndarray, bench: "Benchmark", cfg: EvalConfig,
              layout: dict) -> dict[str, dict]:
    """Fit every head on the tune pairs (all, and leave-category-out) and score the test pairs.

    ``layout``: ``channels`` and ``weights`` of the model's features
    (``ModelConfig.head_layout``)."""
    test, tune = bench.test, bench.tune
    tune_cats, test_cats = tune.categories, test.categories
    rows = {}
    for name, fitter in _fitters(cfg, layout).items():
        heads = fitter(v_tune, tune, np.arange(len(tune)))
        held = np.zeros((len(heads), len(test)))
        for cat in dict.fromkeys(test_cats):
            fold = fitter(v_tune, tune, np.flatnonzero(tune_cats != cat))
            for d, head in enumerate(fold):
                held[d, test_cats == cat] = head.score(v_test[test_cats == cat])
        rows[name] = _mean_rows([_row(test, h.score(v_test), bench.boot, held[d])
                                 for d, h in enumerate(heads)])
    return rows


@dataclass
class EvalReport:
    """Correlations of every method; ``rows[name] = {SRCC, KRCC, PLCC, ..., categories}``."""

    rows: dict[str, dict]
    n_pairs: int
    n_refs: int
    n_fit_pairs: int
    config: dict

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)

    def to_markdown(self) -> str:
        """The results as two Markdown tables: overall, and SRCC per KADID category."""
        lines = ["| method | SRCC [95% CI over refs] | KRCC | PLCC | monotone in level "
                 "| leave-category-out SRCC (pooled / mean) |", "|---|---|---|---|---|---|"]
        for name, r in self.rows.items():
            ci = f" [{r['SRCC_lo']:.3f}, {r['SRCC_hi']:.3f}]" if "SRCC_lo" in r else ""
            sd = f" ± {r['SRCC_sd']:.3f} SD" if "SRCC_sd" in r else ""
            lines.append(f"| {name} | {r['SRCC']:.3f}{ci}{sd} | {r['KRCC']:.3f} | "
                         f"{r['PLCC']:.3f} | {100 * r['monotone']:.1f}% | "
                         f"{r['folds']:.3f} / {r['folds_mean']:.3f} |")
        cats = list(next(iter(self.rows.values()))["categories"])
        lines += ["", "| method | " + " | ".join(cats) + " |", "|---" * (len(cats) + 1) + "|"]
        for name, r in self.rows.items():
            lines.append(f"| {name} | " + " | ".join(f"{r['categories'][c]:.3f}" for c in cats)
                         + " |")
        return "\n".join(lines)


@dataclass
class Benchmark:
    """Rendered pairs, metric scores and bootstrap draws, reusable across models."""

    test: PairSet
    tune: PairSet
    metric_scores: dict[str, np.ndarray]
    boot: list[np.ndarray]


def split_references(split: str, cfg: EvalConfig) -> dict[str, np.ndarray]:
    """The development set's references of ``split`` ("test" or "tune"), ``cfg.max_refs``
    of them if set."""
    from cdiqa.model.devset import load_split

    refs = load_split(split, cfg.refs)
    return dict(list(refs.items())[:cfg.max_refs]) if cfg.max_refs else refs


def prepare(cfg: EvalConfig, progress: Progress | None = None) -> Benchmark:
    """Render both splits and compute the training-free metrics (model independent)."""
    test = render_pairs(split_references("test", cfg), cfg, "render test", progress)
    tune = render_pairs(split_references("tune", cfg), cfg, "render tune", progress)
    return Benchmark(test, tune, metric_scores(test, _step(progress, "metrics")),
                     bootstrap_rows(test, cfg.bootstrap, cfg.seed))


def evaluate_features(features: Featurizer, layout: dict, cfg: EvalConfig | None = None, *,
                      bench: Benchmark | None = None, shipped: Head | None = None,
                      progress: Progress | None = None) -> EvalReport:
    """The benchmark for any model given as a featurizer (torch model, bundle, prototype)."""
    cfg = cfg or EvalConfig()
    bench = bench or prepare(cfg, progress)
    v_test, v_tune = features(bench.test, "features test"), features(bench.tune, "features tune")
    rows = {}
    if shipped is not None:
        rows["shipped head (as iqa-export score)"] = _row(bench.test, shipped.score(v_test),
                                                          bench.boot)
    rows.update(head_rows(v_test, v_tune, bench, cfg, layout))
    for name, s in bench.metric_scores.items():
        rows[name] = _row(bench.test, s, bench.boot)
    return EvalReport(rows, len(bench.test), len(bench.test.refs), len(bench.tune),
                      cfg.to_dict())


def torch_featurizer(model, progress: Progress | None = None) -> Featurizer:
    """Features of a ``CDIQA`` model through torch (``cdiqa.model.scoring.pair_features``)."""
    from cdiqa.model.scoring import pair_features

    def features(ps: PairSet, stage: str) -> np.ndarray:
        return pair_features(model, ps.pairs(), len(ps), _step(progress, stage))
    return features


def evaluate(model, cfg: EvalConfig | None = None, *, bench: Benchmark | None = None,
             shipped: Head | None = None, progress: Progress | None = None) -> EvalReport:
    """Run the benchmark for a ``CDIQA`` model (``bench`` from ``prepare`` to skip rendering)."""
    return evaluate_features(torch_featurizer(model, progress), model.cfg.head_layout(), cfg,
                             bench=bench, shipped=shipped, progress=progress)


def evaluate_checkpoint(checkpoint=None, cfg: EvalConfig | None = None,
                        progress: Progress | None = None, head=None) -> EvalReport:
    """``evaluate`` of a checkpoint file (None: the bundled default model and its head)."""
    from cdiqa.model.scoring import resolve_head, resolve_model

    shipped = resolve_head(head) if (head is not None or checkpoint is None) else None
    return evaluate(resolve_model(checkpoint), cfg, shipped=shipped, progress=progress)
