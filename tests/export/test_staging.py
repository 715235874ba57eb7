"""Staging folders: bundle copies that never leave the bundle, cleanup, stale folders, swaps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdiqa.errors import ManifestError
from cdiqa.export.staging import copy_bundle, replace_dir, staged, staging_dir


def _bundle(root: Path) -> Path:
    b = root / "bundle"
    (b / "profiles").mkdir(parents=True)
    (b / "manifest.json").write_text("{}")
    (b / "profiles" / "natural.json").write_text("head")
    return b


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_in_bundle_relative_links_stay_links(tmp_path):
    b = _bundle(tmp_path)
    (b / "profiles" / "default.json").symlink_to("natural.json")
    (b / "here").symlink_to(".")  # a loop for a walker that follows links, not for this one
    dst = tmp_path / "copy"
    dst.mkdir()
    copy_bundle(b, dst)
    assert os.readlink(dst / "profiles" / "default.json") == "natural.json"
    assert (dst / "profiles" / "default.json").read_text() == "head"
    assert os.readlink(dst / "here") == "."


@pytest.mark.parametrize("target, got", [
    ("{outside}", "a link to '{outside}'"),              # absolute, outside
    ("../big", "a link to '../big'"),                    # relative, leaves the bundle
    ("{inside}", "a link to '{inside}'"),                # absolute, even into the bundle
    ("../bundle/manifest.json", "a link to '../bundle/manifest.json'"),  # the live bundle
    ("loop", "a link loop ('loop')"),                    # points at itself
    ("missing.json", "a link to nothing ('missing.json')"),
])
def test_links_that_leave_the_bundle_are_refused_by_name(tmp_path, target, got):
    b = _bundle(tmp_path)
    big = tmp_path / "big"
    big.mkdir()
    (big / "data.bin").write_bytes(b"x" * 1000)
    names = {"outside": str(big), "inside": str(b / "manifest.json")}
    (b / "loop").symlink_to(target.format(**names))
    dst = tmp_path / "copy"
    dst.mkdir()
    with pytest.raises(ManifestError) as info:
        copy_bundle(b, dst)
    msg = str(info.value)
    assert f"Link for bundle entry '{b / 'loop'}': got {got.format(**names)}" in msg
    assert not (dst / "loop").exists() and not list(dst.rglob("data.bin"))


def test_failure_mid_copy_leaves_no_staging_folder(tmp_path):
    b = _bundle(tmp_path)
    os.mkfifo(b / "zz.pipe")  # met after the other entries are copied; never opened
    with pytest.raises(ManifestError, match=r"Kind for bundle entry '.*zz\.pipe': got a named "
                                            r"pipe, expected a file, a folder or a link"):
        with staged(b, "calib") as tmp:
            copy_bundle(b, tmp)
    assert _leftovers(b) == []


def test_stale_staging_of_dead_writers_is_removed(tmp_path):
    b = _bundle(tmp_path)
    live = staging_dir(b, "tmp")  # this process: alive, kept
    host, dead = live.name.split(".")[3], _dead_pid()
    stale = [b.parent / f".bundle.{kind}.{host}.{dead}.abc123" for kind in ("tmp", "calib")]
    for path in stale:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "model.onnx").write_bytes(b"half")
    other = b.parent / f".bundle.tmp.0000ffff.{dead}.abc123"  # another host's: never judged
    other.mkdir()
    fresh = staging_dir(b, "calib")
    assert _leftovers(b) == sorted([live.name, fresh.name, other.name])


def test_stale_old_is_put_back_when_the_swap_was_cut(tmp_path):
    b = _bundle(tmp_path)
    host = staging_dir(b, "tmp").name.split(".")[3]
    old = b.parent / f".bundle.old.{host}.{_dead_pid()}.abc123"
    os.replace(b, old)  # killed between the swap's two renames: no bundle, only .old
    staging_dir(b, "tmp")
    assert (b / "profiles" / "natural.json").read_text() == "head" and not old.exists()


def test_swap_does_not_collide_with_an_old_folder_of_the_same_pid(tmp_path):
    b = _bundle(tmp_path)
    left = b.parent / f".bundle.{os.getpid()}.old"  # what an earlier run with this PID left
    left.mkdir()
    (left / "manifest.json").write_text("older")
    for text in ("new", "newer"):  # twice in one process: each swap gets its own name
        new = staging_dir(b, "tmp")
        (new / "manifest.json").write_text(text)
        replace_dir(new, b)
        assert (b / "manifest.json").read_text() == text
    assert _leftovers(b) == [left.name]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_named_and_no_staging_is_left(tmp_path):
    b = _bundle(tmp_path)
    secret = b / "profiles" / "natural.json"
    secret.chmod(0)
    try:
        with pytest.raises(ManifestError, match=r"Copy for bundle entry '.*natural\.json': got "
                                                r"Permission denied"):
            with staged(b, "calib") as tmp:
                copy_bundle(b, tmp)
    finally:
        secret.chmod(0o644)
    assert _leftovers(b) == []
