"""benchmarks/_report.py: the machine line and the section writer of docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = ("quality", "domains", "domains_cv", "load_test", "runtime_bench")

DOC = """# Benchmarks

Intro.

## Quality (KADID-13 development benchmark)

- old quality numbers

### Notes

kept with their section

## Serving

- old serving numbers

## Cross-domain

| a | b |
"""


def _load(name: str, monkeypatch):
    """Import benchmarks/<name>.py by path, the way a test or notebook would."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts insert their folder
    monkeypatch.delitem(sys.modules, "_report", raising=False)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def report(monkeypatch):
    return _load("_report", monkeypatch)


def test_replace_section_replaces_only_its_section(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    report.replace_section(doc, "## Serving", "## Serving\n\n- new serving numbers\n")
    assert doc.read_text() == DOC.replace("- old serving numbers\n",
                                          "- new serving numbers\n")


def test_replace_section_takes_its_subsections_along(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    heading = "## Quality (KADID-13 development benchmark)"
    report.replace_section(doc, heading, f"{heading}\n\n- new\n")
    text = doc.read_text()
    assert "old quality" not in text and "### Notes" not in text
    assert text.startswith("# Benchmarks\n\nIntro.\n\n" + heading + "\n\n- new\n\n## Serving\n")
    assert text.endswith(DOC[DOC.index("## Serving"):])


def test_replace_section_last_section(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    report.replace_section(doc, "## Cross-domain", "## Cross-domain\n\nnew\n")
    assert doc.read_text() == DOC[:DOC.index("## Cross-domain")] + "## Cross-domain\n\nnew\n"


def test_replace_section_appends_when_missing(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    report.replace_section(doc, "## Reduced precision", "## Reduced precision\n\nx\n")
    assert doc.read_text() == DOC + "\n## Reduced precision\n\nx\n"


def test_replace_section_matches_whole_heading_lines_only(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nsee ## Serving\n### Serving\n")
    report.replace_section(doc, "## Serving", "## Serving\n\nnew\n")
    assert doc.read_text() == ("# Benchmarks\n\n## Other\n\nsee ## Serving\n### Serving\n"
                               "\n## Serving\n\nnew\n")


def test_replace_section_starts_a_missing_file(report, tmp_path):
    doc = tmp_path / "benchmarks.md"
    report.replace_section(doc, "## Serving", "## Serving\n\nnew\n")
    assert doc.read_text() == "# Benchmarks\n\n## Serving\n\nnew\n"
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temp file left


def test_machine_and_command_lines(report):
    assert " cores, load average " in report.machine() and report.cpu_model()
    assert report.machine().startswith(f"{report.cpu_model()} ({report.cpu_flags()}), ")
    assert report.command_line(BENCHMARKS / "quality.py", ["--write-docs", "--draws", "2"]) \
        == "python benchmarks/quality.py --write-docs --draws 2"
    assert report.command_line(BENCHMARKS / "domains.py", []) == "python benchmarks/domains.py"


@pytest.mark.parametrize("name", ["quality", "domains", "load_test"])
def test_scripts_use_the_shared_report(name, monkeypatch):
    mod = _load(name, monkeypatch)
    assert mod.command_line is sys.modules["_report"].command_line
    assert not hasattr(mod, "write_docs")


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_run_from_anywhere(name, tmp_path):
    """``python benchmarks/x.py`` finds _report from the script's folder, whatever the cwd."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_domains_cv_table_marks_the_best_of_each_domain():
    spec = importlib.util.spec_from_file_location("domains_cv", BENCHMARKS / "domains_cv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"domain": "screen", "pairs": 90, "images": 9,
             "srcc": {"natural model": 0.87, "adapted": 0.931, "SSIM": 0.915}},
            {"domain": "medical", "pairs": 280, "images": 8,
             "srcc": {"natural model": 0.636, "adapted": 0.6, "SSIM": 0.7}}]
    lines = mod.to_markdown(rows).splitlines()
    assert lines[0] == "| domain | natural model | adapted | SSIM |"
    assert lines[2] == "| screen (90 pairs, 9 images) | 0.870 | **0.931** | 0.915 |"
    assert lines[3].endswith("| 0.636 | 0.600 | **0.700** |")
    rows[0]["interval"] = {"adapted": [0.9, 0.95]}
    assert "| **0.931** [0.90, 0.95] | 0.915 |" in mod.to_markdown(rows)
    for r, (a, b) in zip(rows, ((0.9, 0.8), (0.5, 0.7))):
        r["per_kind"] = {"adapted": {"blur": a, "noise": 1.0}, "SSIM": {"blur": b, "noise": 0.9}}
    lines = mod.per_kind_markdown(rows).splitlines()
    assert lines[0] == "| domain | kind | adapted | SSIM |"
    assert lines[2:5] == ["| screen | blur | **0.900** | 0.800 |",
                          "| screen | noise | **1.000** | 0.900 |",
                          "| screen | mean | **0.950** | 0.850 |"]
    assert lines[5] == "| medical | blur | 0.500 | **0.700** |"
