"""`iqa-export score --pairs` through the runtime against the torch path, in one run.

    python benchmarks/pairs_bench.py [--pairs 100] [--also CHECKPOINT HEAD] [--write-docs]

Writes N distorted 512 x 384 pairs (KADID development types on two references drawn by
cdiqa's own generator) and a pairs CSV into a temporary folder, then runs, each as a fresh
process: `iqa-export score --pairs` (the torch-free runtime; the child checks that torch was
never imported) and the same with `--checkpoint/--head` (the torch path, the bundled model's
checkpoint and head; ``--also`` adds another model's torch path, e.g. the conv trunk that
was the default when issue 11 measured 37 min for 1750 pairs). Prints wall time, pairs/s and the ratio, and the largest difference
between the CSV's scores and `Scorer.score` on single pairs.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import DOCS, command_line, machine, replace_section, utc_now  # noqa: E402

HEADING = "## Batch scoring: score --pairs, runtime vs torch"
RUNTIME_CHILD = """
import sys
from cdiqa.cli import main
sys.argv = ["iqa-export"] + sys.argv[1:]
try:
    main()
finally:
    assert "torch" not in sys.modules, "the runtime path imported torch"
"""


def write_pairs(folder: Path, n: int) -> Path:
    """n pairs of 512 x 384 PNGs and their CSV."""
    from PIL import Image

    from cdiqa.model.distortions import distort
    from cdiqa.model.data import dev_kinds

    y, x = np.mgrid[0:384, 0:512] / 512
    refs = [np.stack([x, y, 0.5 + 0.4 * np.sin((9 + 7 * i) * x * y * 6)], axis=2)
            + np.random.default_rng(i).normal(0, 0.02, (384, 512, 3)) * i for i in (0, 1)]
    kinds = dev_kinds()
    rows = []
    for i in range(n):
        r = i % 2
        ref = folder / f"ref{r}.png"
        if not ref.exists():
            Image.fromarray((np.clip(refs[r], 0, 1) * 255).astype(np.uint8)).save(ref)
        img = np.asarray(Image.open(ref), np.float32) / 255
        dist = distort(img, kinds[i % len(kinds)], 1 + i % 5, seed=i)
        path = folder / f"dist{i:03d}.png"
        Image.fromarray((np.clip(dist, 0, 1) * 255).round().astype(np.uint8)).save(path)
        rows.append({"ref_path": ref.name, "dist_path": path.name})
    table = folder / "pairs.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["ref_path", "dist_path"])
        w.writeheader()
        w.writerows(rows)
    return table


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def scores(path: Path) -> dict[str, tuple[str, float]]:
    """dist -> (ref, score) of a results CSV."""
    with open(path) as f:
        return {r["dist"]: (r["ref"], float(r["score"])) for r in csv.DictReader(f)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--also", nargs=2, metavar=("CHECKPOINT", "HEAD"), default=None,
                    help="another model's torch path, timed on the same pairs")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)

    from cdiqa.manifest import DEFAULT_BUNDLE
    from cdiqa.runtime import Scorer

    assets = Path(DEFAULT_BUNDLE).parent
    header = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table = write_pairs(folder, args.pairs)
        runtime = timed([sys.executable, "-c", RUNTIME_CHILD, "score", "--pairs", str(table),
                         "--out", str(folder / "runtime.csv"), "--threads", "1"])
        torch_path = timed([sys.executable, "-m", "cdiqa.cli", "score", "--pairs", str(table),
                            "--out", str(folder / "torch.csv"),
                            "--checkpoint", str(assets / "model.pt"),
                            "--head", str(assets / "head.json")])
        other = None
        if args.also:
            other = timed([sys.executable, "-m", "cdiqa.cli", "score", "--pairs", str(table),
                           "--out", str(folder / "other.csv"), "--checkpoint", args.also[0],
                           "--head", args.also[1]])
        got = scores(folder / "runtime.csv")
        with Scorer.load() as scorer:
            single = {d: scorer.score(folder / ref, folder / d)
                      for d, (ref, _) in sorted(got.items())[:10]}
        worst = max(abs(got[d][1] - s) for d, s in single.items())
        torch_scores = scores(folder / "torch.csv")
        vs_torch = max(abs(got[d][1] - torch_scores[d][1]) for d in got)
    n = args.pairs
    text = (f"{HEADING}\n\n- machine: {header}\n- date: {utc_now()}\n- command: "
            f"`{command_line(__file__, argv)}`\n\n"
            "| path | wall s (process start to exit) | pairs/s | x torch path |\n|---|---|---|---|\n"
            f"| runtime (`score --pairs`, 1 thread, torch never imported) | {runtime:.1f} | "
            f"{n / runtime:.1f} | {torch_path / runtime:.1f} |\n"
            f"| torch (`--checkpoint --head`, the same model) | {torch_path:.1f} | "
            f"{n / torch_path:.1f} | 1.0 |\n"
            + (f"| torch, `--also` model ({Path(args.also[0]).name}) | {other:.1f} | "
               f"{n / other:.1f} | {torch_path / other:.2f} |\n" if other else "") + "\n"
            f"{n} pairs of 512x384; largest |runtime CSV - Scorer.score single pair| over 10 "
            f"rows: {worst:.2e}; largest |runtime - torch| over all rows: {vs_torch:.2e}.\n")
    print(text)
    if args.write_docs:
        replace_section(DOCS, HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
