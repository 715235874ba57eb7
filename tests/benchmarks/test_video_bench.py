"""benchmarks/video_bench.py: runs from any folder, and its docs section reads right."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "video_bench.py"


def test_runs_from_anywhere(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr


def test_section_compares_score_video_with_the_runtime(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script inserts its folder
    spec = importlib.util.spec_from_file_location("video_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rates = {(640, 360): {"runtime": 10.0, "decode": 300.0, "score-video": 9.6, "frames": 150,
                          "ratio": 0.95}}
    text = mod.section(rates, {10.0: 200.0, 60.0: 204.0}, "a machine", "python x", 12.0)
    assert text.startswith(mod.SECTION + "\n")
    assert "| 640x360 | 150 | 10.00 | 300 | 9.60 | 95.0% | 95% to 95% |" in text  # median
    assert "10 s clip 200 MiB, 60 s clip 204 MiB (+2.0%" in text
