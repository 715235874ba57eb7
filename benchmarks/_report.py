"""What every benchmark script records beside its numbers, and how it writes docs/benchmarks.md.

docs/benchmarks.md names, for every number, the machine it came from, the date and the command
that made it; each script owns one "## Section" of it and replaces only that section.

The scripts are run as ``python benchmarks/x.py``, which puts this folder on ``sys.path``;
they import this module as ``_report``.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from cdiqa.runtime.bench import cpu_model  # noqa: F401 (part of this module's interface)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model and its vector flags (``cpu_flags``: what INT8 and FP32 speed depend on),
    core count and the 1-minute load average now.

    >>> machine()  # doctest: +SKIP
    'AMD EPYC (AVX2, AVX-512), 2 cores, load average 6.6 at start'
    """
    return (f"{cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at start")


def cpu_flags() -> str:
    """The SIMD flags that decide ONNX Runtime's kernels (AVX2, AVX-512, VNNI), from
    /proc/cpuinfo; "unknown" elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(next((l.split(":", 1)[1].split() for l in text.splitlines()
                      if l.startswith("flags")), []))
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
             "avx_vnni": "AVX-VNNI"}
    return ", ".join(v for k, v in names.items() if k in flags) or "none of AVX2/AVX-512/VNNI"


def utc_now() -> str:
    """The date line's value: UTC, to the minute (e.g. '2026-11-26 14:09 UTC')."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(script: str | os.PathLike, argv: list[str] | None = None) -> str:
    """The command that reproduces this run from the repository root.

    Args:
        script: the script's ``__file__``; written relative to the repository root.
        argv: the arguments ``main`` was given; None means the process's (``sys.argv[1:]``).

    >>> command_line(ROOT / "benchmarks" / "quality.py", ["--write-docs"])
    'python benchmarks/quality.py --write-docs'
    """
    path = Path(script).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return " ".join(["python", shown.as_posix(), *(sys.argv[1:] if argv is None else argv)])


def replace_section(path: str | os.PathLike, heading: str, text: str) -> None:
    """Replace the section ``heading`` of the Markdown file ``path`` with ``text``, atomically.

    The section runs from the line ``heading`` (e.g. ``"## Serving"``) to the next ``## ``
    heading (its ``###`` subsections go with it) or the end of the file. ``text`` must start
    with ``heading`` itself. Without such a section, ``text`` is appended; a missing file is
    started as ``# Benchmarks``. Everything else is kept byte for byte, and the file is
    replaced by rename, so a crash leaves the old file or the new one, never half of one.
    """
    path = Path(path)
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    found = re.search(rf"^{re.escape(heading)}\n", old, re.M)
    if found is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        start = found.start()
        nxt = re.search(r"^## ", old[found.end():], re.M)
        new = old[:start] + text + ("\n" + old[found.end() + nxt.start():] if nxt else "")
    write_text(path, new)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (``cdiqa.files``), so an
    interrupted benchmark never leaves half a result file."""
    from cdiqa.files import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))
