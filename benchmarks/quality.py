"""Development benchmark of the model's heads vs the classical metrics (512 x 384 references).

    iqa-export fetch-devset                     # once: the references, into a cache
    python benchmarks/quality.py [--checkpoint model.pt [--head head.json]]... [--refs DIR]
                                 [--draws 20] [--write-docs]

Runs ``cdiqa.model.evaluate`` (what ``iqa-export eval`` runs): the 12 test photographs of the
development set (``cdiqa.model.devset``, 512 x 384 like KADID-10k) distorted with the 13 KADID
development types at 5 levels, each pair's target the KADID-10k mean opinion score of its
(type, level); heads fitted on the disjoint tune split, also in leave-category-out folds;
HaarPSI, MDSI, VSI, GMSD, MS-SSIM, SSIM and PSNR in the same run. Prints the tables and, with
``--write-docs``, replaces the section "Quality (development benchmark)" of docs/benchmarks.md
(and nothing else) with them, the machine, the date and the command. Several
``--checkpoint``s (each with its ``--head``, by position) are scored on the same rendered
pairs, so their tables compare like with like (e.g. a new default model against the old one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when loaded by path

from _report import (DOCS, command_line, machine, replace_section, utc_now,  # noqa: E402
                     write_text)

SECTION = "## Quality (development benchmark)"


def section(reports: dict, info: str, command: str, seconds: float) -> str:
    """The Markdown section for docs/benchmarks.md: one table pair per model."""
    first = next(iter(reports.values()))
    lines = [
        SECTION, "",
        f"- machine: {info}", f"- date: {utc_now()}", f"- command: `{command}` ({seconds:.0f} s)",
        f"- {first.n_pairs} test pairs ({first.n_refs} whole 512x384 references x 13 types x "
        f"5 levels), heads fitted on {first.n_fit_pairs} pairs of the disjoint tune split; "
        "target: the KADID-10k mean opinion score of the pair's (type, level).",
        "- SRCC/KRCC/PLCC against the targets (PLCC after the 4-parameter logistic), the SRCC's "
        "95% bootstrap interval over test references; 'monotone in level': share of "
        "(reference, type) sequences whose score never rises with severity; leave-category-out: "
        "each head refitted without a KADID category and scored on it (pooled over all pairs / "
        "mean within categories). Few-shot rows are the mean of random label draws (± SD).", ""]
    for name, report in reports.items():
        lines += [f"### {name}", "", report.to_markdown(), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="repeatable; default: the bundled model")
    p.add_argument("--head", type=Path, action="append", default=None,
                   help="shipped head of each --checkpoint, by position")
    p.add_argument("--refs", type=Path, default=None, help="fetched development set")
    p.add_argument("--draws", type=int, default=20, help="few-shot label draws per k")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args(argv)

    from cdiqa.model.evaluate import EvalConfig, evaluate, prepare
    from cdiqa.model.scoring import resolve_head, resolve_model

    info = machine()
    command = command_line(__file__, argv)
    t0 = time.perf_counter()
    cfg = EvalConfig(refs=str(args.refs) if args.refs else None, few_shot_draws=args.draws)

    def stage(name: str, i: int, n: int) -> None:
        if i == 1:
            print(f"{name} ({n})...", file=sys.stderr)

    bench = prepare(cfg, stage)
    checkpoints = args.checkpoint or [None]
    heads = (args.head or []) + [None] * len(checkpoints)
    reports = {}
    for ckpt, head in zip(checkpoints, heads):
        shipped = resolve_head(head) if (head is not None or ckpt is None) else None
        name = f"model {ckpt}" if ckpt else "the bundled default model"
        reports[name] = evaluate(resolve_model(ckpt), cfg, bench=bench, shipped=shipped,
                                 progress=stage)
    text = section(reports, info, command, time.perf_counter() - t0)
    print(text)
    if args.json:
        write_text(args.json, json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1))
    if args.write_docs:
        replace_section(DOCS, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
