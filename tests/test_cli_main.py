"""The console entry point's exit codes, through a real process (not typer's CliRunner, which
never runs ``main``): 0 ok, 1 user error without a traceback, 2 internal bug."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cdiqa
from cdiqa.manifest import DEFAULT_BUNDLE


def _run(*args: str, exe: tuple[str, ...] = (sys.executable, "-m", "cdiqa.cli"),
         ) -> subprocess.CompletedProcess:
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A private copy of the packaged default bundle (numpy + ONNX, no torch needed)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return Path(shutil.copytree(DEFAULT_BUNDLE, tmp_path / "bundle"))


@pytest.fixture
def damaged(bundle) -> Path:
    """The bundle copy with one byte of model.onnx flipped (same size, other sha256)."""
    path = bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return bundle


def test_unknown_command_is_a_usage_error_exiting_1_without_traceback():
    out = _run("no-such-command")
    assert out.returncode == 1
    assert "No such command 'no-such-command'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_option_is_a_usage_error_exiting_1_without_traceback():
    out = _run("version", "--bogus")
    assert out.returncode == 1
    assert "No such option: --bogus" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_option_value_exits_1():
    out = _run("train", "--steps", "many")
    assert out.returncode == 1
    assert "Invalid value for '--steps'" in out.stderr and "Traceback" not in out.stderr


def test_no_command_prints_the_help_and_exits_1():
    out = _run()
    assert out.returncode == 1 and "Commands" in out.stdout + out.stderr


def test_version_and_help_exit_0():
    out = _run("version")
    assert out.returncode == 0 and out.stdout.strip()
    out = _run("--help")
    assert out.returncode == 0 and "check" in out.stdout


def test_check_of_an_intact_bundle_exits_0(bundle):
    out = _run("check", str(bundle), "--no-parity", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True


def test_check_of_a_bundle_with_a_flipped_byte_exits_1(damaged):
    out = _run("check", str(damaged), "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False
    assert "sha256 for bundle file 'model.onnx'" in report["items"][0]["detail"]
    assert "Traceback" not in out.stderr


def test_the_console_script_exits_1_on_a_damaged_bundle(damaged):
    script = Path(sys.executable).with_name("iqa-export")
    if not script.is_file():
        pytest.skip(f"console script not installed beside {sys.executable}")
    out = _run("check", str(damaged), exe=(str(script),))
    assert out.returncode == 1 and "FAIL" in out.stdout, out.stdout + out.stderr


def test_version_option_prints_the_version_command():
    out, command = _run("--version"), _run("version")
    assert out.returncode == command.returncode == 0
    assert out.stdout == command.stdout == f"{cdiqa.__version__}\n"


def test_score_of_a_missing_file_exits_1_with_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    ref = tmp_path / "ref.png"
    out = _run("score", str(ref), str(tmp_path / "dist.png"))
    assert out.returncode == 1
    assert out.stderr == f"error: Image file '{ref}' does not exist. Check the path.\n"


def test_an_internal_bug_exits_2_with_its_traceback():
    code = ("import sys, cdiqa.cli as cli\n"
            "@cli.app.command('boom')\n"
            "def boom() -> None:\n"
            "    raise ZeroDivisionError('a bug')\n"
            "sys.argv = ['iqa-export', 'boom']\n"
            "cli.main()\n")
    out = _run(exe=(sys.executable, "-c", code))
    assert out.returncode == 2
    assert "Traceback" in out.stderr and "ZeroDivisionError: a bug" in out.stderr
    assert "internal error: this is a bug in cdiqa" in out.stderr
