"""The KADID-13 development benchmark: model heads against training-free metrics.

::

    eval images (data.EVAL_IMAGES) ─► 256 px tiles ─► 13 dev types x 5 levels ─► 8-bit pairs
    heads images (data.HEAD_IMAGES) ─► the same ─► pairs that fit the heads
    target of a pair = KADID-10k mean opinion score of its (type, level)  (the marginals CSV)

    label-free head    fitted on the heads pairs' features, no label read
    few-shot k         k random heads pairs labelled, averaged over ``draws`` random draws
    supervised         every heads pair labelled
    PSNR, SSIM, MS-SSIM, GMSD on the eval pairs of the same run

Reported per method: SRCC, KRCC, PLCC (4-parameter logistic) against the targets, and the
fraction of (reference tile, type) sequences whose score never rises with severity (the
order of ``DistortionType.severity_pairs``; Mean_Shift's two sides separately). The
evaluation images are never trained on and never label a head (see ``cdiqa.model.data``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from cdiqa import metrics
from cdiqa.heads import Head
from cdiqa.model import heads as fit
from cdiqa.model.data import dev_kinds, read_marginals, reference_tiles
from cdiqa.model.network import CDIQA

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvalConfig:
    """Options of the benchmark."""

    tile: int = 256
    max_tiles: int = 4
    seed: int = 0
    few_shot_k: tuple[int, ...] = (10, 50)
    few_shot_draws: int = 20
    marginals: str | None = None

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)


@dataclass
class PairSet:
    """Rendered pairs of one split, with their targets."""

    refs: list[np.ndarray]
    ref_index: np.ndarray  # (N,) row -> refs
    ref_names: list[str]
    kinds: list[str]
    levels: np.ndarray
    mos: np.ndarray
    dists: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.dists)

    def pairs(self):
        """(ref, dist) per row, grouped by reference."""
        return ((self.refs[i], d) for i, d in zip(self.ref_index, self.dists))


def render_pairs(split: str, cfg: EvalConfig, progress: Progress | None = None) -> PairSet:
    """Distort the tiles of ``split`` with the 13 dev types at 5 levels (8-bit, seeded)."""
    from cdiqa.model.distortions import distort, pair_seed

    marg = read_marginals(cfg.marginals)
    kinds = dev_kinds(cfg.marginals)
    tiles = reference_tiles(split, cfg.tile, cfg.max_tiles)
    out = PairSet([], np.zeros(0, int), [], [], np.zeros(0, int), np.zeros(0), [])
    idx, levels, mos = [], [], []
    total = len(tiles) * len(kinds) * 5
    for r, (name, ref) in enumerate(tiles.items()):
        ref = np.round(ref * 255) / np.float32(255)
        out.refs.append(ref)
        out.ref_names.append(name)
        for kind in kinds:
            for lv in range(1, 6):
                d = distort(ref, kind, lv, seed=pair_seed(cfg.seed, name, kind, lv))
                out.dists.append((np.round(d * 255) / 255).astype(np.float32))
                out.kinds.append(kind)
                idx.append(r)
                levels.append(lv)
                mos.append(marg[(kind, lv)])
                if progress is not None:
                    progress(f"render {split}", len(out.dists), total)
    out.ref_index, out.levels, out.mos = np.array(idx), np.array(levels), np.array(mos)
    return out


def metric_scores(pairs: PairSet, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Training-free metrics of every pair, "higher is better" (``metrics.pair_scores``)."""
    step = None if progress is None else (lambda i, n: progress("metrics", i, n))
    return metrics.pair_scores(pairs.pairs(), step)


def monotone_fraction(pairs: PairSet, scores: np.ndarray) -> float:
    """Fraction of (tile, type) sequences whose score never rises with the severity order."""
    from cdiqa.model.distortions import distortion_type

    ok, n = 0, 0
    kinds = np.array(pairs.kinds)
    for r in range(len(pairs.refs)):
        for kind in dict.fromkeys(pairs.kinds):
            rows = np.flatnonzero((pairs.ref_index == r) & (kinds == kind))
            by_level = {int(pairs.levels[i]): scores[i] for i in rows}
            order = distortion_type(kind).severity_pairs()
            ok += all(by_level[a] >= by_level[b] for a, b in order)
            n += 1
    return ok / n


@dataclass
class EvalReport:
    """Correlations and monotonicity of every method; ``rows[name] = {SRCC, KRCC, PLCC, ...}``."""

    rows: dict[str, dict[str, float]]
    n_pairs: int
    n_refs: int
    n_fit_pairs: int
    config: dict

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)

    def to_markdown(self) -> str:
        """The results as a Markdown table."""
        lines = ["| method | SRCC | KRCC | PLCC | monotone in level |",
                 "|---|---|---|---|---|"]
        for name, r in self.rows.items():
            sd = f" ± {r['SRCC_sd']:.3f}" if "SRCC_sd" in r else ""
            lines.append(f"| {name} | {r['SRCC']:.3f}{sd} | {r['KRCC']:.3f} | {r['PLCC']:.3f} "
                         f"| {100 * r['monotone']:.1f}% |")
        return "\n".join(lines)


def _row(pairs: PairSet, scores: np.ndarray) -> dict[str, float]:
    r = metrics.correlations(scores, pairs.mos)
    r["monotone"] = monotone_fraction(pairs, scores)
    return r


#: label-free variants reported: name -> fit_label_free keyword arguments
LABEL_FREE_VARIANTS = {
    "label-free, energy of deviations (default)": {"method": "energy", "pooling": "std"},
    "label-free, energy of means and deviations": {"method": "energy", "pooling": "both"},
    "label-free, PCA first component": {"method": "pca"},
}


def head_rows(v_eval: np.ndarray, v_fit: np.ndarray, evals: PairSet, fits: PairSet,
              cfg: EvalConfig, channels) -> dict[str, dict[str, float]]:
    """Fit every head on the fit pairs and evaluate it on the eval pairs."""
    rows = {}
    for name, kw in LABEL_FREE_VARIANTS.items():
        head = fit.fit_label_free(v_fit, channels=channels, **kw)
        rows[name] = _row(evals, head.score(v_eval))
    for k in cfg.few_shot_k:
        draws = []
        for d in range(cfg.few_shot_draws):
            pick = np.random.default_rng([cfg.seed, k, d]).choice(len(fits), k, replace=False)
            head: Head = fit.fit_few_shot(v_fit, v_fit[pick], fits.mos[pick],
                                          groups=fits.ref_index[pick], channels=channels)
            draws.append(_row(evals, head.score(v_eval)))
        row = {key: float(np.mean([r[key] for r in draws])) for key in draws[0]}
        row["SRCC_sd"] = float(np.std([r["SRCC"] for r in draws]))
        rows[f"few-shot, k={k} (mean of {cfg.few_shot_draws} draws)"] = row
    head = fit.fit_supervised(v_fit, fits.mos, seed=cfg.seed)
    rows[f"supervised MLP ({len(fits)} labels)"] = _row(evals, head.score(v_eval))
    return rows


@dataclass
class Benchmark:
    """Rendered pairs and metric scores, reusable across the models being compared."""

    evals: PairSet
    fits: PairSet
    metric_scores: dict[str, np.ndarray]


def prepare(cfg: EvalConfig, progress: Progress | None = None) -> Benchmark:
    """Render both splits and compute the training-free metrics (model independent)."""
    evals = render_pairs("eval", cfg, progress)
    fits = render_pairs("heads", cfg, progress)
    return Benchmark(evals, fits, metric_scores(evals, progress))


def evaluate(model: CDIQA, cfg: EvalConfig | None = None, *, bench: Benchmark | None = None,
             progress: Progress | None = None) -> EvalReport:
    """Run the benchmark for ``model`` (``bench`` from ``prepare`` to skip re-rendering)."""
    from cdiqa.model.scoring import pair_features

    cfg = cfg or EvalConfig()
    bench = bench or prepare(cfg, progress)
    cb = (lambda name: (lambda i, n: progress(name, i, n))) if progress else (lambda name: None)
    v_eval = pair_features(model, bench.evals.pairs(), len(bench.evals), cb("features eval"))
    v_fit = pair_features(model, bench.fits.pairs(), len(bench.fits), cb("features heads"))
    rows = head_rows(v_eval, v_fit, bench.evals, bench.fits, cfg, model.cfg.channels)
    for name, s in bench.metric_scores.items():
        rows[name] = _row(bench.evals, s)
    return EvalReport(rows, len(bench.evals), len(bench.evals.refs), len(bench.fits),
                      cfg.to_dict())


def evaluate_checkpoint(checkpoint=None, cfg: EvalConfig | None = None,
                        progress: Progress | None = None) -> EvalReport:
    """``evaluate`` of a checkpoint file (None: the bundled default model)."""
    from cdiqa.model.scoring import resolve_model

    return evaluate(resolve_model(checkpoint), cfg, progress=progress)
