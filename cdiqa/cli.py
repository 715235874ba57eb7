"""`iqa-export`: the command line, a thin layer over the library.

Each command parses options, builds a config, calls one public function and prints the
result. Exit codes (set by ``main``, the rule of STYLE.md section 8):

====  ==========================================================================================
code  when
====  ==========================================================================================
0     the command did what was asked (``--help`` included)
1     a user error: a ``CdiqaError`` (its message on one line, no traceback); an optional
      dependency not installed (one line naming the extra to install); a failure a
      command signals with ``typer.Exit(n)``, n != 0 (``check`` of a damaged bundle) or a
      library with ``sys.exit(n)``; a usage error (unknown command or option, bad or missing
      value, no command at all: click alone would exit 2 there, but the user can fix it, so 1);
      Ctrl-C
2     an internal bug: any other exception, printed with its traceback
====  ==========================================================================================

Only a bug exits 2, so a CI gate can tell "fix your input" from "report this".
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Optional

import typer

from cdiqa import _lazy
from cdiqa.errors import CdiqaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export, calibrate, build and serve the cdiqa FR-IQA model.")


def echo_json(obj) -> None:
    """Print machine-readable output."""
    typer.echo(json.dumps(obj, indent=2, default=str))


@contextmanager
def progress(description: str, total: int | None = None, unit: str | None = None) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n=1, total=None, *, done=None,
    stage=None)``: ``n`` more done, or ``done`` in all; ``stage`` is shown after the
    description. ``unit``: also show the mean rate, e.g. "12.3 pairs/s". Where stderr is not
    a terminal, rich draws the bar once, at the end."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    rate = [TextColumn("{task.fields[rate]}")] if unit else []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *rate,
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1, total: int | None = None, *, done: int | None = None,
                    stage: str | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            if stage is not None:
                bar.update(task, description=f"{description}: {stage}")
            bar.advance(task, n) if done is None else bar.update(task, completed=done)
            if unit:
                t = bar.tasks[task]
                bar.update(task, rate=f"{t.completed / max(t.elapsed or 0, 1e-9):.1f} {unit}/s")

        yield advance


def on_steps(advance):
    """The library's ``progress(stage, done, total)`` (``cdiqa._progress``) drawn by ``advance``
    of ``progress``."""
    return lambda stage, done, total: advance(done=done, total=total, stage=stage)


# ---- commands (each one short; the work lives in the library) ----


@app.command()
def version() -> None:
    """Print the cdiqa version."""
    from cdiqa import __version__

    typer.echo(__version__)


def _version_option(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", is_eager=True,
                                               callback=_version_option,
                                               help="Print the cdiqa version and exit.")) -> None:
    """Train, export, calibrate, build and serve the cdiqa FR-IQA model."""


@app.command("triton")
def triton_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    out: Path = typer.Option(..., "--out", help="Repository to write (replaced atomically)."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime or tensorrt (ensemble with a "
                                                    "Python head), python (whole runtime)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (TensorRT on GPU)."),
    domain: Optional[str] = typer.Option(None, help="Domain head served; default: the bundle's."),
    instances: int = typer.Option(1, help="Model instances (per GPU with --gpu)."),
    gpu: bool = typer.Option(False, "--gpu", help="KIND_GPU instances (default KIND_CPU)."),
    max_batch: int = typer.Option(8, help="Triton max_batch_size."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads per CPU instance."),
    engine: list[str] = typer.Option([], help="CC=PLAN, repeatable (tensorrt): 9.0=model.plan."),
    plugin_library: Optional[Path] = typer.Option(None, help="Masking plugin .so of the plans."),
) -> None:
    """Write a Triton model repository (config.pbtxt + versioned models) for a bundle."""
    from cdiqa.errors import ConfigError
    from cdiqa.export.triton import TritonConfig, triton_from_bundle

    pairs = [e.partition("=") for e in engine]
    if any(not cc or not plan for cc, _, plan in pairs):
        raise ConfigError(f"Option for --engine: got {engine}, expected CC=PLAN. "
                          "Write e.g. --engine 9.0=model.plan.")
    config = TritonConfig(backend=backend, precision=precision, domain=domain,
                          instances=instances, gpu=gpu, max_batch=max_batch, threads=threads,
                          engines=tuple((cc, plan) for cc, _, plan in pairs),
                          plugin_library=str(plugin_library) if plugin_library else None)
    repo = triton_from_bundle(bundle, out, config)
    typer.echo(f"wrote {repo} ({backend}, {precision}; model 'cdiqa')")


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (replaced atomically)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint; default: the bundled model."),
    profile: list[str] = typer.Option([], help="DOMAIN=HEAD.json, repeatable; default: the "
                                               "bundled head as 'natural'."),
    default_domain: str = typer.Option("natural", help="Domain used when none is named."),
    opset: int = typer.Option(18, help="ONNX opset (>= 18)."),
    halo: int = typer.Option(128, help="Tile halo in pixels recorded for the runtime."),
) -> None:
    """Export a bundle: portable ONNX, TensorRT-plugin ONNX, checkpoint, profiles, manifest."""
    from cdiqa.errors import ConfigError
    from cdiqa.export import ExportConfig, export_bundle

    pairs = [p.partition("=") for p in profile]
    if any(not d or not f for d, _, f in pairs):
        raise ConfigError(f"Option for --profile: got {profile}, expected DOMAIN=HEAD.json. "
                          "Write e.g. --profile medical=head_medical.json.")
    profiles = {d: f for d, _, f in pairs} or None
    config = ExportConfig(opset=opset, default_domain=default_domain, halo=halo)
    with progress("export") as advance:
        manifest = export_bundle(out, checkpoint, profiles, config, progress=on_steps(advance))
    typer.echo(f"wrote {out} ({manifest.model_id}; domains {sorted(manifest.domains)})")


@app.command("check")
def check_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    parity: bool = typer.Option(True, help="Compare with torch when it is installed."),
) -> None:
    """Check a bundle: hashes, graphs, plugin nodes, and ONNX Runtime vs torch parity."""
    from rich.console import Console

    from cdiqa.export.check import check_bundle

    report = check_bundle(bundle, parity=parity)
    if json_out:
        echo_json(report.to_dict())
    else:
        Console().print(report.table())
    if not report.ok:
        raise typer.Exit(1)


@app.command("bench")
def bench_cmd(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle; default: export the default model."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    quick: bool = typer.Option(False, help="One small size, a few seconds (smoke test)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for both engines."),
    budget: Optional[float] = typer.Option(None, help="Seconds of timed calls per case."),
) -> None:
    """Throughput and latency of PyTorch eager vs ONNX Runtime at 256x256, 512x384, 1920x1080."""
    from dataclasses import replace

    from rich.console import Console

    from cdiqa.export.bench import BenchConfig, run_bench

    config = BenchConfig.quick() if quick else BenchConfig()
    config = replace(config, threads=threads, budget_s=budget or config.budget_s)
    with progress("bench") as advance:
        report = run_bench(bundle, config, progress=on_steps(advance), on_rows=_echo_timings)
    if json_out:
        echo_json(report.to_dict())
    else:
        Console().print(report.table())


def _echo_timings(rows) -> None:
    """One case of ``bench`` on stderr as soon as it is timed (the table comes at the end)."""
    torch_rate = next((t.pairs_per_s for t in rows if t.engine == "torch"), None)
    for t in rows:
        ratio = f"{t.pairs_per_s / torch_rate:5.2f}x torch" if torch_rate else ""
        typer.echo(f"{t.case.label:>9} b{t.case.batch:<2} {t.engine:<30} {t.pairs_per_s:8.2f} "
                   f"pairs/s  p50 {t.p50_ms:7.1f} ms  p99 {t.p99_ms:7.1f} ms  {ratio}", err=True)


@app.command("serve")
def serve_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, help="TCP port; 0 picks a free one (printed)."),
    domain: Optional[str] = typer.Option(None, help="Default domain; default: the bundle's."),
    backend: str = typer.Option("auto", help="Runtime backend: auto, onnxruntime, tensorrt."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N; default: the backend's."),
    threads: Optional[int] = typer.Option(None, help="CPU threads per inference call."),
    max_batch: int = typer.Option(8, help="Most pairs per inference call (1: no micro-batching)."),
    max_wait_ms: float = typer.Option(5.0, help="Longest a micro-batch waits for more pairs."),
    max_queue: int = typer.Option(64, help="Pairs that may wait per domain (503 above)."),
    timeout: float = typer.Option(30.0, help="Seconds per request (504 after)."),
    max_body_mb: float = typer.Option(32.0, help="Largest request body in MiB (413 above)."),
    max_pixels: Optional[int] = typer.Option(None, help="Most pixels per image, checked from "
                                                        "the header (413 above); default 64 MP."),
    max_inflight_pixels: Optional[int] = typer.Option(None, help="Decoded pixels of all "
                                                                 "requests in flight (503 "
                                                                 "above); default 2 x "
                                                                 "--max-pixels."),
    tile: int = typer.Option(512, help="Score images larger than this in tiles (0: never)."),
) -> None:
    """Serve a bundle over HTTP: /v1/score, /v1/score/batch, /healthz, /readyz, /metrics."""
    from cdiqa.images import pixel_budget
    from cdiqa.runtime.server import ServeConfig, serve

    config = ServeConfig(host=host, port=port, domain=domain, backend=backend, device=device,
                         threads=threads, max_batch=max_batch, max_wait=max_wait_ms / 1000,
                         max_queue=max_queue, timeout=timeout,
                         max_body=_bytes_from_mib(max_body_mb),
                         max_pixels=pixel_budget(max_pixels),
                         max_inflight_pixels=max_inflight_pixels, tile=tile or None)
    serve(bundle, config)


def _bytes_from_mib(mib: float) -> int | float:
    """MiB as whole bytes; NaN and inf are passed on for ``ServeConfig.check`` to refuse."""
    import math

    return int(mib * (1 << 20)) if math.isfinite(mib) else mib


def _csv_list(values: list[str]) -> list[str]:
    """Repeated options that may also hold comma-separated values."""
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


@app.command("distort")
def distort_cmd(
    refs: list[Path] = typer.Argument(None, help="Reference image files."),
    out: Path = typer.Option(..., "--out", help="Folder for the distorted PNGs and pairs.csv."),
    kinds: list[str] = typer.Option([], help="Distortion names or KADID ids (repeat or comma-"
                                             "separate); default: the 13 KADID dev types."),
    levels: list[str] = typer.Option([], help="Levels 1..5 (repeat or comma-separate); default all."),
    seed: int = typer.Option(0, help="Seed of the run (each pair derives its own)."),
    builtin: Optional[str] = typer.Option(None, help="Also use a built-in split's tiles: eval, "
                                                     "heads or train (saved under OUT/refs)."),
) -> None:
    """Render distorted copies of reference images and a pairs.csv listing them."""
    from cdiqa.model.data import render_references

    lv = [int(x) if x.isdigit() else x for x in _csv_list(levels)] or [1, 2, 3, 4, 5]
    with progress("distort") as advance:
        csv_path = render_references(refs or [], out, kinds=_csv_list(kinds), levels=lv,
                                     seed=seed, builtin=builtin,
                                     progress=lambda i, n: advance(1, total=n))
    typer.echo(f"wrote {csv_path}")


@app.command("train")
def train_cmd(
    out: Path = typer.Option(Path("runs/model.pt"), "--out", help="Checkpoint to write."),
    refs: Optional[Path] = typer.Option(None, help="Folder of extra reference images."),
    builtin: bool = typer.Option(True, help="Also train on the built-in training images."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps; default: TrainConfig's."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same weights."),
    resume: Optional[Path] = typer.Option(None, help="Checkpoint to continue from."),
    domain: Optional[str] = typer.Option(None, help="Add this domain's degradations."),
    kinds: str = typer.Option("dev", help="dev (13 KADID dev types) or all (25)."),
    frontend: str = typer.Option("pyramid", help="pyramid (fixed YIQ bands, the default "
                                                 "model), fixed (opponent gradients + conv "
                                                 "trunk) or learned (trunk, learned stem)."),
) -> None:
    """Train the model label-free on distorted references (no opinion scores)."""
    from cdiqa.model.network import ModelConfig
    from cdiqa.model.train import TrainConfig, train

    extra = {"steps": steps} if steps is not None else {}
    cfg = TrainConfig(refs=str(refs) if refs else None, builtin=builtin, seed=seed,
                      kinds=kinds, domain=domain, model=ModelConfig.named(frontend), **extra)
    with progress("train", cfg.steps) as advance:
        result = train(cfg, out, resume=resume, progress=lambda s, n, logs: advance(
            done=s, total=n, stage=f"loss {logs['total']:.4f}"))
    typer.echo(f"wrote {result.checkpoint} ({result.steps} steps, {result.seconds:.0f} s)")


@app.command("fit-head")
def fit_head_cmd(
    kind: str = typer.Option(..., help="label-free, few-shot or supervised."),
    pairs: Path = typer.Option(..., help="CSV with ref_path, dist_path [, score]."),
    out: Path = typer.Option(..., "--out", help="Head JSON to write."),
    checkpoint: Optional[Path] = typer.Option(None, help="Model; default: the bundled one."),
) -> None:
    """Fit a quality head on the features of a pairs file."""
    from cdiqa.model.fit_heads import fit_head_file

    with progress("features") as advance:
        head = fit_head_file(kind, pairs, out, checkpoint, lambda i, n: advance(1, total=n))
    typer.echo(f"wrote {out} ({head.kind}, {head.dim} features)")


@app.command("score")
def score_cmd(
    ref: Optional[Path] = typer.Argument(None, help="Reference image, or folder of references."),
    dist: Optional[Path] = typer.Argument(None, help="Distorted image, or folder of them: "
                                                     "ref/cat.png <-> dist/cat_jpeg_3.png."),
    pairs: Optional[Path] = typer.Option(None, help="CSV with ref_path, dist_path columns."),
    out: Optional[Path] = typer.Option(None, "--out", help="Per-pair results: OUT.csv or "
                                                           "OUT.jsonl (needed for many pairs, "
                                                           "unless --json)."),
    recursive: bool = typer.Option(False, "--recursive", help="Folders: sub-folders too, "
                                                              "matching relative paths."),
    bundle: Optional[Path] = typer.Option(None, help="Bundle; default: the bundled model."),
    domain: Optional[str] = typer.Option(None, help="Domain profile; default: the bundle's."),
    precision: str = typer.Option("fp32", help="fp32, a calibrated domain's int8/fp16, or "
                                  "auto (the fastest that passed its gate, timed here)."),
    tile: Optional[int] = typer.Option(None, help="Score images larger than this in tiles, "
                                       "memory bounded whatever the size; default 1024 "
                                       "(0: never)."),
    max_pixels: Optional[int] = typer.Option(None, help="Most pixels per image, checked from "
                                                        "the header; default 64 MP."),
    threads: Optional[int] = typer.Option(None, help="CPU threads; default: all cores."),
    checkpoint: Optional[Path] = typer.Option(None, help="Torch checkpoint instead of a bundle."),
    head: Optional[Path] = typer.Option(None, help="Head JSON for --checkpoint (torch)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-pair results as JSON."),
    map_png: Optional[Path] = typer.Option(None, "--map", help="One pair: also write where it "
                                           "is degraded, as a colour PNG (brighter = worse)."),
) -> None:
    """Quality in [0, 1] (1 = identical) of a pair, of every row of a pairs CSV, or of two
    folders (a distorted file belongs to the reference whose stem is the longest prefix of its
    stem). Bad rows become error rows; the exit code is 1 if any."""
    from contextlib import nullcontext

    from cdiqa.errors import ConfigError
    from cdiqa.runtime.batch import (ScorerConfig, output_format, plan_jobs, score_each,
                                     tile_option, write_results)

    many = pairs is not None or (ref and dist and ref.is_dir() and dist.is_dir())
    if out is None and not json_out and many:
        raise ConfigError("Option for score: got no --out for many pairs, expected --out "
                          "OUT.csv or OUT.jsonl, or --json. Add one.")
    output_format(out) if out else None  # before any work
    plan = plan_jobs(ref, dist, pairs, recursive=recursive)
    if map_png and (plan.mode != "pair" or checkpoint or head):
        raise ConfigError("Option --map for score: got many pairs or --checkpoint/--head, "
                          "expected one pair scored with a bundle. Drop --map or pass one pair.")
    config = ScorerConfig(bundle=bundle, domain=domain, precision=precision,
                          tile=tile_option(tile), threads=threads, max_pixels=max_pixels)
    scorer = _torch_scorer(checkpoint, head, config) if checkpoint or head else config.open()
    n = len(plan.jobs)
    bar = progress("score", n, unit="pairs") if n > 4 else nullcontext(lambda: None)
    with scorer, bar as advance:
        results = write_results(out, score_each(scorer, plan.jobs, progress=lambda *_: advance()))
        if map_png and not results[0].error:
            from cdiqa.runtime.maps import write_map_png

            write_map_png(map_png, scorer.quality_map(ref, dist))
            typer.echo(f"wrote {map_png}", err=True)
    failed = [r for r in results if r.error]
    if plan.mode == "pair" and out is None:
        if failed:
            raise failed[0].exception
        return echo_json(results[0].to_dict()) if json_out else typer.echo(
            f"{results[0].score:.6f}")
    for r in failed[:10]:
        typer.echo(f"error: {r.error}", err=True)
    echo_json([r.to_dict() for r in results]) if json_out else None
    typer.echo(f"{'wrote ' + str(out) if out else 'scored'} ({n - len(failed)} of {n} pairs "
               f"scored, {len(failed)} failed)", err=json_out)
    if failed:
        raise typer.Exit(1)


@app.command("score-video")
def score_video_cmd(
    ref: str = typer.Argument(..., help="Reference video: a file, or a URL FFmpeg reads."),
    dist: str = typer.Argument(..., help="Distorted video, paired with REF frame by frame."),
    out: Optional[Path] = typer.Option(None, "--out", help="Per-frame scores: OUT.csv or "
                                                           "OUT.jsonl."),
    offset: int = typer.Option(0, help="Pair reference frame i with distorted frame i + N "
                                       "(N < 0: skip -N reference frames)."),
    every: int = typer.Option(1, help="Score every Nth frame pair (all are decoded)."),
    scale: bool = typer.Option(False, "--scale", help="Resize distorted frames of another "
                                                      "size to the reference's (else error)."),
    shortest: bool = typer.Option(False, "--shortest", help="Score the overlap when the frame "
                                                            "counts differ (else error)."),
    batch: int = typer.Option(1, help="Pairs per inference call (CPU: 1 is fastest)."),
    bundle: Optional[Path] = typer.Option(None, help="Bundle; default: the bundled model."),
    domain: Optional[str] = typer.Option(None, help="Domain profile; default: the bundle's."),
    precision: str = typer.Option("fp32", help="fp32, a calibrated domain's int8/fp16, or "
                                  "auto (the fastest that passed its gate, timed here)."),
    tile: Optional[int] = typer.Option(None, help="Score frames larger than this in tiles; "
                                       "default 1024 (0: never)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads; default: all cores."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Score a distorted video against its reference frame by frame (PyAV: the video extra):
    per-frame rows to --out, and the pooled mean, harmonic mean, 5th percentile, minimum and
    worst frames. Different frame counts or sizes are errors unless --shortest or --scale."""
    from cdiqa.runtime.batch import ScorerConfig, output_format, tile_option
    from cdiqa.runtime.video import VideoOptions, VideoPair

    options = VideoOptions(offset=offset, every=every, scale=scale, shortest=shortest,
                           batch=batch)
    output_format(out) if out else None  # before any work
    config = ScorerConfig(bundle=bundle, domain=domain, precision=precision,
                          tile=tile_option(tile), threads=threads)
    with VideoPair(ref, dist, options) as pair, config.open() as scorer, \
            progress("score-video", pair.expected_scored(), unit="frames") as advance:
        summary = pair.score(scorer, out=out, progress=lambda done, total: advance(1, total))
    echo_json(summary.to_dict()) if json_out else typer.echo(summary.to_text())
    if out:
        typer.echo(f"wrote {out}", err=json_out)


def _torch_scorer(checkpoint: Optional[Path], head: Optional[Path], config):
    """--checkpoint/--head: the torch model of ``cdiqa.model.scoring`` as a pairs scorer."""
    from cdiqa._lazy import lazy_import
    from cdiqa.errors import ConfigError
    from cdiqa.runtime.batch import FunctionScorer, ScorerConfig

    if config != ScorerConfig():
        raise ConfigError("Options for score --checkpoint/--head: got runtime options "
                          "(--bundle, --domain, --precision, --tile, --threads), expected "
                          "none. Drop them, or export the checkpoint: iqa-export export.")
    typer.echo("note: --checkpoint/--head score through torch (cdiqa.model), not the "
               "torch-free runtime of a bundle", err=True)
    lazy_import("torch", purpose="Scoring with --checkpoint/--head")
    from cdiqa.model.scoring import pair_features, resolve_head, resolve_model

    model, q_head = resolve_model(checkpoint), resolve_head(head)
    return FunctionScorer(lambda loaded: q_head.score(pair_features(model, loaded)))


@app.command("eval")
def eval_cmd(
    checkpoint: Optional[Path] = typer.Option(None, help="Model; default: the bundled one."),
    refs: Optional[Path] = typer.Option(None, help="Fetched development set (default: "
                                                   "$CDIQA_DEVSET or ~/.cache/cdiqa/devset)."),
    max_refs: Optional[int] = typer.Option(None, help="Only the first n references of each "
                                                      "split (quick runs)."),
    draws: int = typer.Option(20, help="Random draws averaged for each few-shot k."),
    bootstrap: int = typer.Option(1000, help="Resamples of the test references (SRCC CI)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot: Optional[Path] = typer.Option(None, help="Also draw score vs level per type (model "
                                                   "and HaarPSI) into PLOT.png (cdiqa[plots])."),
) -> None:
    """Development benchmark (512x384 references, 13 KADID types) vs HaarPSI, MDSI, GMSD..."""
    from cdiqa.model.evaluate import EvalConfig, evaluate_checkpoint

    cfg = EvalConfig(refs=str(refs) if refs else None, max_refs=max_refs,
                     few_shot_draws=draws, bootstrap=bootstrap)
    if plot is not None:
        from cdiqa.model.plots import check_plot_target, evaluate_with_curves, plot_levels

        check_plot_target(plot)  # before the long run
    with stage_progress() as advance:
        if plot is None:
            report = evaluate_checkpoint(checkpoint, cfg, advance)
        else:
            report, curves = evaluate_with_curves(checkpoint, cfg, advance)
    echo_json(report.to_dict()) if json_out else typer.echo(report.to_markdown())
    if plot is not None:
        title = f"{report.n_refs} test references, {report.n_pairs} pairs"
        typer.echo(f"wrote {plot_levels(curves, plot, title)}", err=True)


@app.command("fetch-devset")
def fetch_devset_cmd(
    out: Optional[Path] = typer.Option(None, help="Cache folder (default: $CDIQA_DEVSET or "
                                                  "~/.cache/cdiqa/devset)."),
) -> None:
    """Fetch the development set's references (Debian packages + scikit-image) into a cache."""
    from cdiqa.model.devset import fetch

    _lazy.lazy_import("skimage", purpose="'iqa-export fetch-devset'")  # before any download

    with stage_progress() as advance:
        folder = fetch(out, advance)
    typer.echo(f"wrote {folder}")


@app.command("build")
def build_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8."),
    domain: Optional[str] = typer.Option(None, help="Domain whose graph; default: the bundle's."),
    min_shape: Optional[str] = typer.Option(None, help="Smallest BxHxW (default 1x64x64)."),
    opt_shape: Optional[str] = typer.Option(None, help="Tuned-for BxHxW (default 1x384x512)."),
    max_shape: Optional[str] = typer.Option(None, help="Largest BxHxW (default 8x1088x1920)."),
    shapes: Optional[str] = typer.Option(None, help="MIN:OPT:MAX instead of the three shapes."),
    old_profile: Optional[str] = typer.Option(None, "--profile", hidden=True,
                                              help="Deprecated spelling of --shapes."),
    version_compatible: bool = typer.Option(False, "--version-compatible",
                                            help="Runs on later TensorRT of the same major."),
    hardware_compatible: bool = typer.Option(False, "--hardware-compatible",
                                             help="Runs on any GPU >= sm_80 (Ampere+)."),
    timing_cache: Optional[Path] = typer.Option(None, help="Timing cache file (read, updated)."),
    plugin_library: Optional[Path] = typer.Option(None, help="C++ plugin .so instead of QDP."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Build a TensorRT engine for this GPU into the bundle (needs TensorRT and a GPU)."""
    from cdiqa.export.engine import BuildConfig, engine_from_bundle, profile_from_options

    if old_profile is not None:  # --profile names a domain head in `export`
        typer.echo("note: build --profile is deprecated; use --shapes", err=True)
        shapes = shapes or old_profile
    config = BuildConfig(precision=precision, domain=domain,
                         profile=profile_from_options(shapes, min_shape, opt_shape, max_shape),
                         version_compatible=version_compatible,
                         hardware_compatible=hardware_compatible,
                         timing_cache=str(timing_cache) if timing_cache else None,
                         plugin_library=str(plugin_library) if plugin_library else None)
    result = engine_from_bundle(bundle, config)
    echo_json(result.to_dict()) if json_out else typer.echo(
        f"wrote {result.path} ({'cached' if result.cached else f'{result.seconds:.0f} s'})")


@app.command("doctor")
def doctor_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report GPU, driver, CUDA, TensorRT, cuda-python and ONNX Runtime (each found or why not)."""
    from cdiqa.runtime.doctor import diagnose, report_dict, report_table

    findings = diagnose()
    echo_json(report_dict(findings)) if json_out else typer.echo(report_table(findings))


@app.command("calibrate")
def calibrate_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory (updated atomically)."),
    domain: str = typer.Option(..., help="natural, underwater, medical, screen or neutron."),
    images: Optional[Path] = typer.Option(None, help="Folder of the domain's references; "
                                                     "default: the built-in samples."),
    pairs: Optional[Path] = typer.Option(None, help="CSV ref_path,dist_path of real pairs."),
    labels: Optional[Path] = typer.Option(None, help="CSV with a score column: few-shot head."),
    method: Optional[str] = typer.Option(None, help="INT8 ranges: percentile (default), minmax "
                                                    "or entropy."),
    quantizer: str = typer.Option("onnxruntime", help="onnxruntime or modelopt."),
    adapt: bool = typer.Option(True, help="Label-free fine-tuning on the domain."),
    steps: Optional[int] = typer.Option(None, help="Adaptation steps; default: "
                                                   "CalibConfig.steps (about 1 min on 2 cores)."),
    encoder: Optional[bool] = typer.Option(None, "--encoder/--no-encoder",
                                           help="Fine-tune the encoder too while adapting "
                                                "(default)."),
    accept_drop: bool = typer.Option(False, "--accept-drop", help="Keep models whose SRCC "
                                     "drop exceeds 0.01 (recorded in the manifest)."),
    from_cache: bool = typer.Option(False, "--from-cache", help="Rebuild INT8 from the "
                                    "bundle's calibration cache (no images)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
) -> None:
    """Create or update a domain profile: adapted graph, head, INT8 and FP16 graphs, gates."""
    from cdiqa.calibration import CalibConfig, calibrate
    from cdiqa.calibration.gate import describe_gate

    chosen = {k: v for k, v in (("method", method), ("encoder", encoder), ("steps", steps))
              if v is not None}
    config = CalibConfig(domain=domain, images=str(images) if images else None,
                         pairs=str(pairs) if pairs else None,
                         labels=str(labels) if labels else None, quantizer=quantizer,
                         adapt=adapt, accept_drop=accept_drop,
                         from_cache=from_cache, threads=threads, **chosen)
    with stage_progress() as advance:
        report = calibrate(bundle, config, progress=advance)
    typer.echo(f"domain '{report.domain}' of {report.bundle}: adapted={report.adapted}, "
               f"{report.references} references (+{report.held_out} held out), "
               f"files {sorted(report.files.values())}")
    for gate in report.gates.values():
        typer.echo("  " + describe_gate(gate))
    for note in report.notes:
        typer.echo("  note: " + note)


@app.command("eval-domain")
def eval_domain_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory (calibrated domains)."),
    domain: list[str] = typer.Option(..., help="Domain(s) to evaluate, repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of Markdown."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
) -> None:
    """SRCC vs the severity ladder on held-out domain samples: natural vs adapted vs metrics."""
    from cdiqa.calibration.evaluate import evaluate_domain, to_markdown

    with stage_progress() as advance:
        results = [evaluate_domain(bundle, d, threads=threads, progress=advance)
                   for d in domain]
    if json_out:
        echo_json([r.to_dict() for r in results])
    else:
        typer.echo(to_markdown(results))


@contextmanager
def stage_progress() -> Iterator:
    """Rich progress bars on stderr, one per stage; yields ``advance(stage, done, total)``."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description:>18}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        tasks: dict = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield advance


def _status(code: object) -> int:
    """The exit status of what a command signalled: 0 for success (``None``, 0), else 1."""
    return 1 if isinstance(code, int) and code != 0 else 0


def _is_usage_error(exc: BaseException) -> bool:
    """A usage error (unknown command, bad option) of the click that typer vendors; recognised
    by its interface (``show``, ``exit_code``), since the class moved with typer's vendoring."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def main() -> None:
    """Console entry point: 0 ok, 1 user error (one line, no traceback), 2 bug (traceback)."""
    try:
        # not standalone: typer returns a typer.Exit's code (and Ctrl-C's 130) instead of
        # exiting, and raises usage errors, so every outcome is mapped here, in one place
        code = app(standalone_mode=False)
    except CdiqaError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    except SystemExit as exc:  # sys.exit() in a library (uvicorn on a busy port), typer on EPIPE
        if isinstance(exc.code, str):
            typer.echo(exc.code, err=True)
        code = 1 if isinstance(exc.code, str) else exc.code
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 1
    except ModuleNotFoundError as exc:  # an optional dependency a library module imports
        if _lazy.extra_of(exc.name or "") is None:
            _exit_bug()
        typer.echo(f"error: {_missing_extra(exc)}", err=True)
        code = 1
    except Exception as exc:
        if not _is_usage_error(exc):
            _exit_bug()
        exc.show()
        code = 1
    sys.exit(_status(code))


#: commands that need more than the extra of the one module found missing
COMMAND_EXTRAS = {"export": "export", "bench": "export", "calibrate": "train,export"}


def _missing_extra(exc: ModuleNotFoundError) -> str:
    """One line for an optional module that is not installed: the command, the module and the
    extra that brings everything the command needs."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    return str(_lazy.missing(exc.name, exc, purpose=f"'iqa-export {command}'",
                             extra=COMMAND_EXTRAS.get(command)))


def _exit_bug() -> NoReturn:
    """Print the traceback of the exception being handled and exit 2."""
    import traceback

    traceback.print_exc()
    typer.echo("internal error: this is a bug in cdiqa; please report it with the trace above",
               err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
