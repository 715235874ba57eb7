"""Score vs level per distortion type on the development benchmark (``iqa-export eval --plot``).

::

    one subplot per dev type (13), x = level 1..5, y = score in [0, 1]:
      model     mean over test references, band = their 25-75 % range
      HaarPSI   the same, for comparison (also "higher is better", in [0, 1])
      KADID     the type's mean opinion score per level, (MOS - 1) / 4: the target's shape

A good metric falls with the level for every type, like the KADID curve; a flat or rising
curve shows where it misses the degradation. matplotlib is optional (``cdiqa[plots]``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdiqa import _lazy
from cdiqa.model.distortions import LEVELS
from cdiqa.model.evaluate import EvalConfig, EvalReport, PairSet, Progress

#: the comparison metric drawn beside the model (a key of ``cdiqa.metrics.METRICS``)
BASELINE = "HaarPSI"


@dataclass(frozen=True)
class LevelCurves:
    """Per-type scores by level: ``scores[method][kind]`` is (levels, references)."""

    kinds: tuple[str, ...]
    categories: dict[str, str]
    scores: dict[str, dict[str, np.ndarray]]
    mos: dict[str, np.ndarray]


def level_curves(pairs: PairSet, scores: dict[str, np.ndarray]) -> LevelCurves:
    """Group per-pair ``scores`` (method -> (N,)) of ``pairs`` by type and level."""
    kinds = tuple(dict.fromkeys(pairs.kinds))
    kind_of, cats = np.array(pairs.kinds), pairs.categories
    out: dict[str, dict[str, np.ndarray]] = {m: {} for m in scores}
    mos = {}
    for kind in kinds:
        rows = [np.flatnonzero((kind_of == kind) & (pairs.levels == lv)) for lv in LEVELS]
        for method, s in scores.items():
            out[method][kind] = np.stack([s[r] for r in rows])
        mos[kind] = np.array([pairs.mos[r].mean() for r in rows])
    return LevelCurves(kinds, {k: str(cats[kind_of == k][0]) for k in kinds}, out, mos)


def evaluate_with_curves(checkpoint=None, cfg: EvalConfig | None = None,
                         progress: Progress | None = None) -> tuple[EvalReport, LevelCurves]:
    """``evaluate_checkpoint``'s report, and the level curves of the model and ``BASELINE``
    from the same run (each pair's features are computed once).

    The model's score is its shipped head's (the default model), or for a checkpoint without
    one the report's first label-free head, fitted on the tune pairs."""
    from cdiqa.model.evaluate import _fitters, evaluate_features, prepare, torch_featurizer
    from cdiqa.model.scoring import resolve_head, resolve_model

    cfg = cfg or EvalConfig()
    model = resolve_model(checkpoint)
    shipped = resolve_head(None) if checkpoint is None else None
    bench = prepare(cfg, progress)
    base, features = torch_featurizer(model, progress), {}

    def remembered(ps: PairSet, stage: str) -> np.ndarray:
        features[stage] = base(ps, stage)
        return features[stage]

    layout = model.cfg.head_layout()
    report = evaluate_features(remembered, layout, cfg, bench=bench, shipped=shipped,
                               progress=progress)
    head, label = shipped, "model (shipped head)"
    if shipped is None:  # the same fit as the report's row of that name
        label, fit = next(iter(_fitters(cfg, layout).items()))
        head = fit(features["features tune"], bench.tune, np.arange(len(bench.tune)))[0]
    scores = {label: head.score(features["features test"]),
              BASELINE: bench.metric_scores[BASELINE]}
    return report, level_curves(bench.test, scores)


def check_plot_target(path: str | os.PathLike) -> None:
    """Fail before a long run: a plot file that is not .png, or no matplotlib.

    Raises:
        ConfigError: ``path`` does not end in .png.
        BackendUnavailable: matplotlib is not installed (``cdiqa[plots]``).
    """
    from cdiqa.errors import ConfigError, describe

    if Path(path).suffix.lower() != ".png":
        raise ConfigError(describe("Suffix", "plot file", path, repr(Path(path).suffix),
                                   "'.png'", "Name the plot e.g. levels.png"))
    _matplotlib_figure()


def plot_levels(curves: LevelCurves, path: str | os.PathLike, title: str = "") -> Path:
    """Draw ``curves`` (one subplot per type) into the PNG ``path``, written atomically.

    Raises:
        BackendUnavailable: matplotlib is not installed (``cdiqa[plots]``).
    """
    from cdiqa.images import atomic_write

    buffer = io.BytesIO()
    _figure(curves, title).savefig(buffer, format="png", dpi=110)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _figure(curves: LevelCurves, title: str):
    """A matplotlib ``Figure`` (not pyplot: no global backend or figure state is touched)."""
    Figure = _matplotlib_figure().Figure
    cols = 5
    rows = -(-len(curves.kinds) // cols)
    figure = Figure(figsize=(3.0 * cols, 2.5 * rows), layout="tight")
    axes = figure.subplots(rows, cols, sharey=True, squeeze=False)
    for ax, kind in zip(axes.flat, curves.kinds):
        for method, style in zip(curves.scores, ("C0-o", "C1--s")):
            s = curves.scores[method][kind]
            ax.plot(LEVELS, s.mean(axis=1), style, ms=3, label=method)
            lo, hi = np.percentile(s, [25, 75], axis=1)
            ax.fill_between(LEVELS, lo, hi, color=style[:2], alpha=0.2, lw=0)
        ax.plot(LEVELS, (curves.mos[kind] - 1) / 4, "k:", label="KADID MOS, (MOS - 1) / 4")
        ax.set_title(f"{kind} ({curves.categories[kind]})", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(LEVELS)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves.kinds):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("score")
    for ax in axes.flat[max(0, len(curves.kinds) - cols):len(curves.kinds)]:
        ax.set_xlabel("level")  # the lowest subplot of each column
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower right", fontsize=9, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _matplotlib_figure():
    return _lazy.lazy_import("matplotlib.figure", purpose="Plotting (iqa-export eval --plot)")
