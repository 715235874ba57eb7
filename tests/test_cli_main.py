"""The console entry point's exit codes: usage errors and user errors without a traceback."""

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdiqa.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_unknown_command_is_a_usage_error_without_traceback():
    out = _run("no-such-command")
    assert out.returncode == 2
    assert "No such command 'no-such-command'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_option_is_a_usage_error_without_traceback():
    out = _run("version", "--bogus")
    assert out.returncode == 2
    assert "--bogus" in out.stderr and "Traceback" not in out.stderr


def test_version_exits_0():
    out = _run("version")
    assert out.returncode == 0 and out.stdout.strip()
