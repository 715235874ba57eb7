"""cdiqa.files.atomic_write: the old file or the new one, never half of one."""

from __future__ import annotations

import os

import pytest

from cdiqa.files import atomic_write


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "out.bin"
    atomic_write(p, lambda f: f.write(b"old"))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_uses_normal_permissions(tmp_path):
    p = atomic_write(tmp_path / "sub" / "perm.bin", lambda f: f.write(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
