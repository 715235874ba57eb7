"""Import direction (read with ast) and the runtime's independence from torch.

- ``runtime`` imports only the core modules (``CORE``), errors, images, tolerances, _lazy,
  heads and itself; never torch, onnx or onnxscript, and onnxruntime/tensorrt only through
  ``_lazy``.
- ``masking <- model <- export <- calibration``: nothing imports against that direction;
  export and kernels do not import the runtime (but for ``ALLOWED``).
- In a fresh interpreter where importing torch fails, ``import cdiqa.runtime``,
  ``import cdiqa.export`` and ``iqa-export --help`` work, and ``import cdiqa.runtime`` loads
  only the standard library beyond numpy (what keeps it fast; its time is measured in
  docs/benchmarks.md, never asserted here).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cdiqa"
#: the core modules: numpy/stdlib only, imported by every layer, importing none of them
CORE = ("cdiqa/masking.py", "cdiqa/manifest.py", "cdiqa/engine_format.py", "cdiqa/gpu.py",
        "cdiqa/triton_layout.py", "cdiqa/files.py", "cdiqa/pairs.py")
RUNTIME_MAY_IMPORT = {"cdiqa", "cdiqa.errors", "cdiqa.images", "cdiqa.tolerances", "cdiqa._lazy",
                      "cdiqa.heads"} | {c[:-3].replace("/", ".") for c in CORE}
HEAVY = {"torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "tensorrt", "cuda"}
#: package -> cdiqa packages it must never import (the one-way flow of STYLE.md 1)
FORBIDDEN = {
    **{c: {"cdiqa.model", "cdiqa.export", "cdiqa.calibration", "cdiqa.runtime", "cdiqa.kernels"}
       for c in CORE},
    "cdiqa/model": {"cdiqa.export", "cdiqa.calibration", "cdiqa.runtime"},
    # build-time formats live in the core modules, not in the runtime
    "cdiqa/export": {"cdiqa.calibration", "cdiqa.runtime"},
    "cdiqa/kernels": {"cdiqa.runtime"},
}
#: (file, module) edges that FORBIDDEN would refuse, and why they are the point of the file
ALLOWED = {
    # the check scores the bundle through the runtime it ships to (Scorer, its feed, its maps)
    ("cdiqa/export/check.py", "cdiqa.runtime"), ("cdiqa/export/check.py", "cdiqa.runtime.Scorer"),
    ("cdiqa/export/check.py", "cdiqa.runtime.preprocess"),
    ("cdiqa/export/check.py", "cdiqa.runtime.maps"),
    # the benchmark times the runtime against torch eager
    ("cdiqa/export/bench.py", "cdiqa.runtime.bench"),
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (relative imports resolved)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(parts[:-node.level] + ((base,) if base else ()))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names
                       if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(
                           ".py").exists())
    return out


def _files(rel: str) -> list[Path]:
    p = PACKAGE.parent / rel
    return [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))


@pytest.mark.parametrize("path", _files("cdiqa/runtime"), ids=lambda p: p.name)
def test_runtime_imports(path: Path) -> None:
    for name in _imports(path):
        root = name.split(".")[0]
        assert root not in HEAVY, f"{path.name} imports {name}: use cdiqa._lazy"
        if root == "cdiqa" and not name.startswith("cdiqa.runtime"):
            assert name in RUNTIME_MAY_IMPORT, f"{path.name} imports {name}"


@pytest.mark.parametrize("rel", sorted(FORBIDDEN))
def test_import_direction(rel: str) -> None:
    for path in _files(rel):
        name = path.relative_to(PACKAGE.parent).as_posix()
        bad = {n for n in _imports(path) for f in FORBIDDEN[rel] if (n == f or
               n.startswith(f + ".")) and (name, n) not in ALLOWED}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


@pytest.mark.parametrize("rel", CORE)
def test_core_is_stdlib_and_numpy_only(rel: str) -> None:
    roots = {n.split(".")[0] for n in _imports(PACKAGE.parent / rel)}
    assert roots <= set(sys.stdlib_module_names) | {"cdiqa", "numpy"}


#: what tests/runtime never imports nor importorskips: .ci/run runs it in a venv of
#: cdiqa[runtime,test] (numpy, Pillow, onnxruntime), where a skip for torch would hide a gap
#: (but cdiqa.model.distortions, numpy-only by design)
NOT_IN_RUNTIME_TESTS = {"torch", "torchvision", "onnx", "onnxscript", "skimage", "cdiqa.model",
                        "cdiqa.calibration"}
TESTS = PACKAGE.parent / "tests"
RUNTIME_TESTS = sorted((TESTS / "runtime").rglob("*.py")) + [TESTS / "conftest.py"]


def _skips_for(path: Path) -> set[str]:
    """The modules of every ``importorskip("...")`` in a file."""
    return {node.args[0].value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
            and node.args and isinstance(node.args[0], ast.Constant)}


@pytest.mark.parametrize("path", RUNTIME_TESTS, ids=lambda p: p.relative_to(TESTS).as_posix())
def test_runtime_tests_need_no_torch(path: Path) -> None:
    used = {n for n in _imports(path) | _skips_for(path)
            if not n.startswith("cdiqa.model.distortions")}
    bad = {n for n in used for f in NOT_IN_RUNTIME_TESTS if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}: such a test belongs in tests/export"


#: run first in the child: importing any of HEAVY but onnxruntime raises ImportError
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'onnx', 'onnxscript', 'tensorrt'}:
            raise ImportError(f'blocked for this test: {name}')
sys.meta_path.insert(0, Block())
"""


def _child(code: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_runtime_and_export_import_without_torch() -> None:
    out = _child("import cdiqa.runtime, cdiqa.runtime.stream, cdiqa.runtime.tiling, "
                 "cdiqa.runtime.bench, cdiqa.runtime.batch, cdiqa.runtime.backends.onnxruntime, cdiqa.export, "
                 "cdiqa.manifest\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
                 "{'torch', 'onnx', 'onnxscript', 'onnxruntime'}))")
    assert out.stdout.strip() == "[]"


def test_ladders_import_without_torch() -> None:
    """The ladder module is shared by the development benchmark (torch) and the cross-domain
    benchmark and gates, which score through the runtime: it must not need torch."""
    out = _child("import cdiqa.model.ladder, cdiqa.calibration.evaluate, cdiqa.calibration.gate"
                 "\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    assert out.stdout.strip() == "[]"


def test_cli_help_without_torch() -> None:
    out = _child("import sys; sys.argv = ['iqa-export', '--help']\nfrom cdiqa.cli import main\n"
                 "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n")
    for command in ("export", "check", "bench"):
        assert command in out.stdout


def test_runtime_import_pulls_only_the_standard_library() -> None:
    """What keeps ``import cdiqa.runtime`` fast (STYLE.md: ~100 ms, numpy ~50 of it): beyond
    numpy it loads only standard-library modules, never scipy, PIL, onnx or another heavy
    package. (The time itself is a benchmark number: benchmarks/runtime_bench.py prints it;
    86 ms cold on the idle 2-vCPU machine, docs/benchmarks.md.)"""
    code = ("import sys\nimport numpy\nbefore = set(sys.modules)\nimport cdiqa.runtime\n"
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = set(_child(code).stdout.split()) - {"cdiqa"}
    outside = {m for m in loaded if m not in sys.stdlib_module_names}
    assert not outside, f"import cdiqa.runtime loads non-standard modules: {sorted(outside)}"


def test_import_cdiqa_pulls_only_the_standard_library() -> None:
    """``import cdiqa`` (for ``cdiqa.score``) loads no numpy, onnxruntime or torch: the
    one-liner imports the runtime on its first call."""
    code = ("import sys\nbefore = set(sys.modules)\nimport cdiqa\n"
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = set(_child(code).stdout.split()) - {"cdiqa"}
    assert {m for m in loaded if m not in sys.stdlib_module_names} == set()


#: import cycles not yet broken (noticed in issue 13; the server's owner's to break)
KNOWN_CYCLES = [{"cdiqa.runtime.server", "cdiqa.runtime.server_openapi"}]


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or w != v:
                w = stack.pop()
                group.add(w)
            if len(group) > 1:
                out.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    """No two modules import each other, at any depth and function-level imports included
    (a lazy import that only dodges a cycle is still one: distortions' kadid <-> domains)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
               for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    graph = {m: {n for n in _imports(p) if n in modules and n != m}
             for m, p in modules.items()}
    assert [c for c in _cycles(graph) if c not in KNOWN_CYCLES] == []
