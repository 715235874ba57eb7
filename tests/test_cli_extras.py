"""Every ``iqa-export`` command in a runtime-only install (``cdiqa[runtime]``): it works, or it
exits 1 with one line naming the extra to install, never a traceback.

The commands run through ``main`` in one child interpreter in which every optional module that
``cdiqa[runtime]`` does not bring cannot be imported (``cdiqa._lazy``'s table). .ci/run also
runs this file in a venv of ``cdiqa[runtime,test]``, where those modules are truly absent and
a module missing from that table fails here with its traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

import cdiqa
from cdiqa import _lazy
from cdiqa.cli import app

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
#: command -> (arguments, the extra named; None: it works with cdiqa[runtime] alone).
#: {b}: a bundle copy, {t}: a temporary folder, {e}: examples/
COMMANDS = {
    "version": ([], None),
    "triton": (["{b}", "--out", "{t}/triton"], None),
    "export": (["--out", "{t}/export"], "export"),
    "check": (["{b}"], "export"),  # a report: its graph rows fail, naming the extra
    "bench": (["{b}", "--quick"], "export"),
    "serve": (["{b}", "--port", "0"], "serve"),
    "distort": (["{e}/ref.png", "--out", "{t}/distorted", "--levels", "1"], None),
    "train": (["--steps", "1", "--out", "{t}/model.pt"], "train"),
    "fit-head": (["--pairs", "{t}/pairs.csv", "--kind", "label-free", "--out", "{t}/h.json"],
                 "train"),
    "score": (["{e}/ref.png", "{e}/dist.png"], None),
    "score-video": (["{t}/ref.mp4", "{t}/dist.mp4"], "video"),
    "eval": ([], "train"),
    "fetch-devset": (["--out", "{t}/devset"], "train"),
    "build": (["{b}"], "trt"),
    "doctor": ([], None),
    "calibrate": (["{b}", "--domain", "screen"], "train"),
    "eval-domain": (["{b}", "--domain", "screen"], "train"),
}
APP_COMMANDS = sorted(get_command(app).commands)
#: modules the child cannot import: every optional one but cdiqa[runtime]'s
BLOCKED = sorted(m for m in _lazy._EXTRAS if _lazy._EXTRAS[m] != "runtime")
CHILD = """
import contextlib, importlib.abc, io, json, sys
BLOCKED = json.loads(sys.argv[1])
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from cdiqa.cli import main
results = {}
for command, args in json.loads(sys.argv[2]).items():
    sys.argv = ["iqa-export", command, *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    results[command] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tiny_bundle: Path, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cli-extras")
    bundle = shutil.copytree(tiny_bundle, tmp / "bundle")
    (tmp / "pairs.csv").write_text(f"ref_path,dist_path\n{ROOT}/examples/ref.png,"
                                   f"{ROOT}/examples/dist.png\n")
    fill = {"b": str(bundle), "t": str(tmp), "e": str(ROOT / "examples")}
    argv = {c: [a.format(**fill) for a in args] for c, (args, _) in COMMANDS.items()
            if c in APP_COMMANDS}
    env = {**os.environ, "PYTHONPATH": str(Path(cdiqa.__file__).parents[1])}  # this cdiqa
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(BLOCKED), json.dumps(argv)],
                          capture_output=True, text=True, cwd=tmp, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", APP_COMMANDS)
def test_command_works_or_names_its_extra(results: dict, command: str) -> None:
    assert command in COMMANDS, f"add a row for '{command}' to COMMANDS"
    code, out, err = results[command]
    extra = COMMANDS[command][1]
    assert "Traceback" not in out + err, err
    if extra is None:
        assert code == 0, err
        return
    assert code == 1 and f"install 'cdiqa[{extra}]'" in out + err, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1 and (errors or command == "check"), err
