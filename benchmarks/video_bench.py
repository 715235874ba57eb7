"""score-video: frames/s against the runtime's pairs/s on the same frames, and peak memory
against the video's length.

    python benchmarks/video_bench.py [--bundle BUNDLE] [--seconds 3] [--repeats 5]
                                     [--threads N] [--rss-seconds 10 60] [--write-docs]

For 640x360 and 1280x720, a reference clip (H.264 CRF 10 of ``cdiqa.runtime.video``'s moving
test pattern, 25 fps) and a distorted one (CRF 35) are encoded; then, in one process with one
``Scorer`` (batch 1), each repeat times in turn:

- runtime: ``Scorer.score_pairs`` on the clips' frames, decoded into memory beforehand and
  converted to float pairs outside the timer (pairs/s: the ceiling, inference alone);
- decode: decoding both clips to RGB, nothing scored (frames/s);
- score-video: ``VideoPair.score``, what ``iqa-export score-video`` runs (decoding, pairing
  and scoring overlapped through the StreamScorer queue), frames/s;

best of the repeats each, and the median ratio of score-video to the runtime timed back to
back. Peak RSS: ``iqa-export score-video`` in a fresh process (its
``VmHWM``) on a 10 s and a 60 s clip at 640x360. Prints a Markdown section; with
``--write-docs`` it replaces "## Video" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when loaded by path

from _report import DOCS, command_line, machine, replace_section, utc_now  # noqa: E402

SECTION = "## Video (score-video)"
SIZES = ((640, 360), (1280, 720))
FPS = 25

#: run in a fresh process: the CLI on two clips, then its peak resident memory in MiB (VmHWM:
#: ru_maxrss would report this benchmark's own peak, which survives the child's execve)
RSS_CHILD = """
import sys
from cdiqa.cli import main
from cdiqa.runtime.bench import peak_rss_mb
sys.argv = ["iqa-export", "score-video", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(peak_rss_mb())
"""


def clips(folder: Path, width: int, height: int, seconds: float) -> tuple[Path, Path]:
    """(reference, distorted) H.264 clips of the moving pattern."""
    from cdiqa.runtime.video import frames, moving_pattern, write_video

    n = int(round(seconds * FPS))
    ref = write_video(folder / f"ref_{width}x{height}_{n}.mp4", moving_pattern(width, height, n),
                      fps=FPS, options={"crf": "10"})
    dist = write_video(folder / f"dist_{width}x{height}_{n}.mp4", frames(ref), fps=FPS,
                       options={"crf": "35"})
    return ref, dist


def throughput(scorer, ref: Path, dist: Path, repeats: int) -> dict:
    """Best-of-``repeats`` rates of the runtime, of decoding alone and of score-video, and
    the median over repeats of score-video / runtime measured back to back; the order of the
    three turns each repeat, so that load from elsewhere falls on all."""
    import numpy as np

    from cdiqa.runtime.preprocess import pair_from
    from cdiqa.runtime.video import VideoPair, frames

    refs, dists = list(frames(ref)), list(frames(dist))
    scorer.score_pairs([pair_from(refs[0], dists[0])])  # warm-up

    def runtime() -> float:
        """Seconds in ``Scorer.score_pairs`` alone: each pair converted beforehand, untimed."""
        spent = 0.0
        for i, (r, d) in enumerate(zip(refs, dists)):
            pair = pair_from(r, d, i)
            t = time.perf_counter()
            scorer.score_pairs([pair])
            spent += time.perf_counter() - t
        return spent

    def decode() -> float:
        t = time.perf_counter()
        assert sum(1 for _ in zip(frames(ref), frames(dist))) == len(refs)
        return time.perf_counter() - t

    def score_video() -> float:
        t = time.perf_counter()
        with VideoPair(ref, dist) as pair:
            assert pair.score(scorer).scored == len(refs)
        return time.perf_counter() - t

    runs = {"runtime": runtime, "decode": decode, "score-video": score_video}
    best, ratios = dict.fromkeys(runs, 0.0), []
    for i in range(repeats):
        names = list(runs)[i % 3:] + list(runs)[:i % 3]
        rate = {}
        for name in names:
            rate[name] = len(refs) / runs[name]()
            best[name] = max(best[name], rate[name])
        ratios.append(rate["score-video"] / rate["runtime"])
    return {**best, "frames": len(refs), "ratio": float(np.median(ratios)),
            "ratios": ratios}


def peak_rss_mib(ref: Path, dist: Path, extra: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ref), str(dist), *extra],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def section(rates: dict, rss: dict, info: str, command: str, seconds: float) -> str:
    lines = [SECTION, "",
             f"- machine: {info}", f"- date: {utc_now()}",
             f"- command: `{command}` ({seconds:.0f} s)",
             "- clips: the moving test pattern of `cdiqa.runtime.video` (textured pan and a "
             f"moving disc), {FPS} fps, H.264: reference CRF 10, distorted CRF 35; the bundled "
             "default model, ONNX Runtime on CPU, batch 1 (what `score-video` uses by default).",
             "- runtime: `Scorer.score_pairs` on the same frames, decoded into memory and "
             "converted to float pairs outside the timer (inference alone: the ceiling); "
             "decode: both clips decoded to RGB, nothing scored; score-video: `VideoPair.score`, what the command runs. All in one process with "
             "one scorer; rates are the best of the repeats, the ratio is the median over "
             "repeats of score-video / runtime timed back to back (the order of the three "
             "turns each repeat).", "",
             "| size | frames | runtime pairs/s | decode frames/s | score-video frames/s "
             "| score-video / runtime | per repeat |", "|---" * 7 + "|"]
    for (w, h), r in rates.items():
        spread = r.get("ratios") or [r["ratio"]]
        lines.append(f"| {w}x{h} | {r['frames']} | {r['runtime']:.2f} | {r['decode']:.0f} | "
                     f"{r['score-video']:.2f} | {r['ratio']:.1%} | "
                     f"{min(spread):.0%} to {max(spread):.0%} |")
    (short, a), (long, b) = sorted(rss.items())
    lines += ["", f"Peak RSS of `iqa-export score-video` (a fresh process, 640x360, "
                  f"`VmHWM`): {short:g} s clip {a:.0f} MiB, {long:g} s clip {b:.0f} MiB "
                  f"({b / a - 1:+.1%}; the floor: within 10 %)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="default: the bundled model")
    p.add_argument("--seconds", type=float, default=3.0, help="clip length for throughput")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--rss-seconds", type=float, nargs=2, default=(10.0, 60.0))
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args(argv)

    from cdiqa.runtime.batch import ScorerConfig

    info, command, t0 = machine(), command_line(__file__, argv), time.perf_counter()
    extra = ([f"--bundle={args.bundle}"] if args.bundle else []) + (
        [f"--threads={args.threads}"] if args.threads else [])
    with tempfile.TemporaryDirectory(prefix="cdiqa-video-bench-") as tmp:
        folder = Path(tmp)
        rates = {}
        with ScorerConfig(bundle=args.bundle, threads=args.threads).open() as scorer:
            for w, h in SIZES:
                print(f"{w}x{h}: encoding {args.seconds:g} s...", file=sys.stderr)
                rates[(w, h)] = throughput(scorer, *clips(folder, w, h, args.seconds),
                                           args.repeats)
                print(f"  {rates[(w, h)]}", file=sys.stderr)
        rss = {}
        for seconds in args.rss_seconds:
            print(f"peak RSS, {seconds:g} s at 640x360...", file=sys.stderr)
            rss[seconds] = peak_rss_mib(*clips(folder, 640, 360, seconds), extra)
            print(f"  {rss[seconds]:.0f} MiB", file=sys.stderr)
    text = section(rates, rss, info, command, time.perf_counter() - t0)
    print(text)
    if args.write_docs:
        replace_section(DOCS, SECTION, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
