"""`iqa-export score --pairs` through the runtime against the torch path, in one run.

    python benchmarks/pairs_bench.py [--pairs 100] [--threads 1 [2 ...]] [--rounds 3]
        [--also CHECKPOINT HEAD | --old-model] [--old-commit REV] [--write-docs]

Writes N distorted 512 x 384 pairs (KADID development types on two references drawn by
cdiqa's own generator) and a pairs CSV into a temporary folder, then runs, each as a fresh
process: `iqa-export score --pairs` (the torch-free runtime; the child checks that torch was
never imported) and the same with `--checkpoint/--head` (the torch path, the bundled model's
checkpoint and head; ``--also`` adds another model's torch path, e.g. the conv trunk that
was the default when issue 11 measured 37 min for 1750 pairs). Prints wall time, pairs/s
and the ratios, and the largest difference between the CSV's scores and `Scorer.score` on
single pairs.

``--old-commit REV`` also times `score --pairs` as it was at REV (issue 11's "today's torch
path" is ``d75e034^``): REV is checked out into a temporary ``git worktree`` (removed and
pruned afterwards) and its own CLI runs with ``PYTHONPATH`` at that tree and this
interpreter, with its own default checkpoint and head; the child checks that cdiqa came
from the old tree and that torch was imported. ``--old-model`` times today's torch path
with that old tree's default checkpoint and head (which model vs which code).

Every case gets the same threads (``--threads``, default 1; several values run every case
at each): OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS in every child's
environment, ``--threads`` for the runtime, and each torch child checks
``torch.get_num_threads()``. The cases run ``--rounds`` times, interleaved (one of each per
round, the order rotated each round); the table gives the median wall time of each and
compares cases of the same thread count.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import DOCS, ROOT, command_line, machine, replace_section, utc_now  # noqa: E402

HEADING = "## Batch scoring: score --pairs, runtime vs torch"
#: every child: the CLI of whichever cdiqa is first on sys.path, with the checks that the
#: environment asks for (BENCH_TREE: cdiqa must come from this folder; BENCH_TORCH: "no"
#: torch must not be imported, else torch must be imported with that many threads)
CHILD = """
import os, sys
from pathlib import Path
import cdiqa
tree = os.environ["BENCH_TREE"]
assert Path(cdiqa.__file__).resolve().is_relative_to(tree), (cdiqa.__file__, tree)
from cdiqa.cli import main
sys.argv = ["iqa-export"] + sys.argv[1:]
try:
    main()
finally:
    want = os.environ["BENCH_TORCH"]
    if want == "no":
        assert "torch" not in sys.modules, "the runtime path imported torch"
    else:
        assert "torch" in sys.modules, "this path was expected to score through torch"
        got = sys.modules["torch"].get_num_threads()
        assert got == int(want), f"torch ran {got} threads, expected {want}"
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


def timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def scores(path: Path) -> dict[str, tuple[str, float]]:
    """dist -> (ref, score) of a results CSV, by file name (today's columns ref/dist hold
    resolved paths; the old torch path kept the pairs file's ref_path/dist_path)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    key = "dist" if rows and "dist" in rows[0] else "dist_path"
    ref = "ref" if key == "dist" else "ref_path"
    return {Path(r[key]).name: (Path(r[ref]).name, float(r["score"])) for r in rows}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@contextmanager
def old_tree(rev: str, folder: Path):
    """A detached ``git worktree`` of ``rev`` in ``folder``; removed and pruned on exit."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    git("worktree", "add", "--detach", "--quiet", str(folder), sha)
    try:
        yield sha
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
                       capture_output=True)
        git("worktree", "prune")


def child_env(threads: int, tree: Path, torch: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=str(tree),
               BENCH_TREE=str(tree), BENCH_TORCH=str(threads) if torch else "no")
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    also = ap.add_mutually_exclusive_group()
    also.add_argument("--also", nargs=2, metavar=("CHECKPOINT", "HEAD"), default=None,
                      help="another model's torch path, timed on the same pairs")
    also.add_argument("--old-model", action="store_true",
                      help="with --old-commit: today's torch path with the old tree's default "
                           "checkpoint and head")
    ap.add_argument("--old-commit", metavar="REV", default=None,
                    help="also time `score --pairs` of this commit's own CLI (a temporary git "
                         "worktree), e.g. d75e034^ for issue 11's 'today's torch path'")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], metavar="N",
                    help="threads of every case (runtime --threads, OMP/MKL/OpenBLAS env); "
                         "several values: every case at each, compared within each")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of all cases, interleaved; the median wall time is reported")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    if args.old_model and not args.old_commit:
        ap.error("--old-model needs --old-commit")

    from cdiqa.manifest import DEFAULT_BUNDLE
    from cdiqa.runtime import Scorer

    assets = Path(DEFAULT_BUNDLE).parent
    header = machine()
    n, settings = args.pairs, list(dict.fromkeys(args.threads))
    old = args.old_commit is not None
    with tempfile.TemporaryDirectory(prefix="pairs_bench-") as tmp, ExitStack() as cleanup:
        folder = Path(tmp)
        table = write_pairs(folder, n)
        old_folder = folder / "old-tree"
        old_sha = cleanup.enter_context(old_tree(args.old_commit, old_folder)) if old else None
        old_date = git("log", "-1", "--format=%cd", "--date=iso", old_sha) if old else None
        old_assets = old_folder / "cdiqa" / "assets" / "default"
        other = args.also or ((str(old_assets / "model.pt"), str(old_assets / "head.json"))
                              if args.old_model else None)

        def case(name: str, t: int, extra: list[str], torch: bool, tree: Path = ROOT):
            return (name, t), lambda r: timed(
                [sys.executable, "-c", CHILD, "score", "--pairs", str(table),
                 "--out", str(folder / f"{name}.t{t}.{r}.csv"), *extra],
                child_env(t, tree, torch), tree)

        cases = []
        for t in settings:
            cases += [case("runtime", t, ["--threads", str(t)], False),
                      case("torch", t, ["--checkpoint", str(assets / "model.pt"),
                                        "--head", str(assets / "head.json")], True)]
            if other:
                cases.append(case("other", t, ["--checkpoint", other[0], "--head", other[1]],
                                  True))
            if old:  # the old CLI as it was: no --threads option, its own checkpoint and head
                cases.append(case("old", t, [], True, old_folder))
        walls: dict[tuple[str, int], list[float]] = {key: [] for key, _ in cases}
        for r in range(args.rounds):
            for key, run in cases[r % len(cases):] + cases[:r % len(cases)]:
                walls[key].append(run(r))
                print(f"round {r + 1}/{args.rounds} {key[0]}, {key[1]} thread(s): "
                      f"{walls[key][-1]:.1f} s", file=sys.stderr, flush=True)
        got = scores(folder / f"runtime.t{settings[0]}.0.csv")
        with Scorer.load() as scorer:
            single = {d: scorer.score(folder / ref, folder / d)
                      for d, (ref, _) in sorted(got.items())[:10]}
        worst = max(abs(got[d][1] - s) for d, s in single.items())
        vs_torch = max(abs(got[d][1] - s) for t in settings for d, (_, s) in
                       scores(folder / f"torch.t{t}.0.csv").items())
        if old:
            with open(table) as f:
                listed = [row["dist_path"] for row in csv.DictReader(f)]
            old_rows = {t: scores(folder / f"old.t{t}.0.csv") for t in settings}
            for t, rows in old_rows.items():
                if list(rows) != listed or not all(math.isfinite(s) and 0 <= s <= 1
                                                   for _, s in rows.values()):
                    raise SystemExit(f"the old path's CSV ({t} threads) does not score the "
                                     f"{n} rows in order")
            old_vs_other = (max(abs(old_rows[t][d][1] - s) for t in settings for d, (_, s) in
                                scores(folder / f"other.t{t}.0.csv").items())
                            if args.old_model else None)
    load_end = "/".join(f"{x:.1f}" for x in os.getloadavg())
    med = {key: statistics.median(w) for key, w in walls.items()}

    def row(label: str, name: str, t: int) -> str:
        w, m = walls[name, t], med[name, t]
        return (f"| {t} | {label} | {m:.1f} ({min(w):.1f}-{max(w):.1f}) | {n / m:.1f} | "
                f"{med['torch', t] / m:.2f} |"
                + (f" {med['old', t] / m:.2f} |" if old else "") + "\n")

    rows = ""
    for t in settings:
        rows += (row("runtime (`score --pairs --threads N`, torch never imported)", "runtime", t)
                 + row("torch (`--checkpoint --head`, the same model)", "torch", t))
        if other:
            rows += row(f"torch, `--also` model ({Path(other[0]).name})" if args.also else
                        "torch (`--checkpoint --head`), the old commit's default model",
                        "other", t)
        if old:
            rows += row(f"old `score --pairs` at {old_sha[:7]} ({args.old_commit}), its own "
                        "default checkpoint and head", "old", t)
    listed_t = ", ".join(map(str, settings))
    text = (f"{HEADING}\n\n- machine: {header}, {load_end} at end (1/5/15 min)\n"
            f"- threads: {listed_t}; every case at each (runtime `--threads N`; "
            "OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS=N in every child; "
            "torch.get_num_threads() == N checked in the torch children)\n"
            f"- date: {utc_now()}\n- command: `{command_line(__file__, argv)}`\n"
            + (f"- old commit: {old_sha} ({args.old_commit}), committed {old_date}; run from a "
               "temporary git worktree with PYTHONPATH at it (cdiqa imported from there and "
               "torch imported, both checked in the child)\n" if old else "")
            + f"\n{args.rounds} rounds of every case, interleaved; wall s is the median "
            "(min-max), process start to exit; ratios within the same thread count.\n\n"
            "| threads | path | wall s | pairs/s | x torch path |"
            + (" x old path |" if old else "") + "\n|---|---|---|---|---|"
            + ("---|" if old else "") + "\n" + rows + "\n"
            f"{n} pairs of 512x384; largest |runtime CSV - Scorer.score single pair| over "
            f"{len(single)} rows: {worst:.2e}; largest |runtime - torch| over all rows: "
            f"{vs_torch:.2e}."
            + (f" The old path wrote a finite score in [0, 1] for all {n} rows, in order"
               + (f"; largest |old path - today's torch path of its model|: {old_vs_other:.2e}"
                  if old_vs_other is not None else "") + "." if old else "")
            + ("\n\nruntime / old path (pairs/s): "
               + ", ".join(f"{med['old', t] / med['runtime', t]:.2f}x at {t} "
                           f"thread{'s' * (t > 1)}" for t in settings)
               + " (issue 11's floor asks at least 10x)." if old else "") + "\n")
    print(text)
    if args.write_docs:
        replace_section(DOCS, HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
