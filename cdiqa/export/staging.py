"""Staging folders beside an output, copying a bundle into one, and the final swap (stdlib).

Every command that writes a bundle or repository (``export``, ``calibrate``, ``triton``) builds
it in a staging folder beside the target and renames it into place when complete::

    .<name>.<kind>.<host>.<pid>.<random>    kind: tmp (export), calib, probe, old (the swap)

The name carries the writer's host and PID, so the next run on the same host removes the
folders of writers that are no longer alive (killed with SIGKILL, power loss): a stale
``old`` is the previous bundle, put back if the target is missing (a swap cut between its two
renames), else removed. The random part keeps names unique when a PID is reused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import stat
import uuid
from pathlib import Path
from typing import Iterator

from cdiqa.errors import ManifestError, describe

#: the kinds of staging folder; a folder of another kind is never touched
KINDS = ("tmp", "calib", "probe", "old")


def _host() -> str:
    # a tag, not the hostname: hostnames may hold dots, and the name is split on them
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def staging_dir(out: Path, kind: str) -> Path:
    """A new empty folder beside ``out`` (mode 755), after removing stale ones of ``out``."""
    if kind not in KINDS:
        raise ValueError(f"staging kind {kind!r} is not one of {KINDS}")
    out = Path(out)
    remove_stale(out)
    tmp = _unique(out, kind)
    tmp.mkdir()
    os.chmod(tmp, 0o755)  # whatever the umask: bundles are meant to be shared
    return tmp


def _unique(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def staged(out: Path, kind: str = "tmp") -> Iterator[Path]:
    """``staging_dir(out, kind)``, removed on exit whatever happens (a no-op once it has been
    renamed into place by ``replace_dir``)."""
    tmp = staging_dir(out, kind)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(out: Path) -> list[Path]:
    """Remove the staging folders of ``out`` whose writer (this host, that PID) is dead;
    returns them. A stale ``old`` folder is renamed back to ``out`` if ``out`` is missing."""
    out = Path(out)
    prefix, host, found = f".{out.name}.", _host(), []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return found
    for name in names:
        parts = name[len(prefix):].split(".") if name.startswith(prefix) else []
        if (len(parts) != 4 or parts[0] not in KINDS or parts[1] != host
                or not parts[2].isdigit() or _alive(int(parts[2]))):
            continue
        path = out.parent / name
        found.append(path)
        if parts[0] == "old" and not os.path.lexists(out):
            try:
                os.replace(path, out)
                continue
            except OSError:  # another run restored it, or wrote ``out``, meanwhile: stale
                pass
        shutil.rmtree(path, ignore_errors=True)
    return found


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (unknown counts as alive: kept)."""
    if pid <= 0 or os.name != "posix":  # os.kill(pid, 0) terminates the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return True
    return True


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished directory ``tmp`` to ``out`` (same file system); an old ``out`` is
    removed only after the new one is in place, and put back if the move fails."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _unique(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def copy_bundle(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing folder ``dst``, never leaving ``src``.

    Folders and regular files are copied; a symbolic link is kept as a link when it is
    relative and its target lies inside ``src``. A link that is absolute, leads outside
    ``src``, dangles or loops, and anything that is not a file, folder or link (a FIFO, a
    device), is refused.

    Raises:
        ManifestError: naming the entry that cannot be staged.
    """
    src, dst = Path(src), Path(dst)
    try:
        _copy(src, dst, src.resolve())
    except OSError as exc:  # a real failure (unreadable, disk full): name the file
        raise ManifestError(describe("Copy", "bundle entry", exc.filename or src,
                                     exc.strerror or exc, "a readable bundle and space to "
                                     "stage a copy beside it", "Fix the permissions or free "
                                     "space")) from None


def _copy(src: Path, dst: Path, root: Path) -> None:
    def fail(exc: OSError) -> None:
        raise exc

    # followlinks=False: links are listed in dirs/files, never entered
    for folder, dirs, files in os.walk(src, onerror=fail):
        here = Path(folder)
        target = dst / here.relative_to(src)
        target.mkdir(exist_ok=True)
        for name in sorted(dirs + files):
            path = here / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                _check_link(path, src, root)
                os.symlink(os.readlink(path), target / name)
            elif stat.S_ISREG(mode):
                shutil.copy2(path, target / name)
            elif not stat.S_ISDIR(mode):
                raise ManifestError(describe("Kind", "bundle entry", path, _kind(mode),
                                             "a file, a folder or a link inside the bundle",
                                             "Remove it or replace it with a regular file"))


def _check_link(path: Path, src: Path, root: Path) -> None:
    link = os.readlink(path)
    # as written, from the link's folder: a staged copy of the link must point into the copy
    spelled = os.path.normpath(os.path.join(os.path.relpath(path.parent, src), link))
    fix = ("Replace the link with a copy of its target, or with a relative link to a file "
           "inside the bundle")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop (Python < 3.13)
        loop = isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP
        got = "a link loop" if loop else "a link to nothing"
        raise ManifestError(describe("Link", "bundle entry", path, f"{got} ('{link}')",
                                     "a link to a file or folder inside the bundle", fix)) from None
    if (os.path.isabs(link) or spelled == ".." or spelled.startswith(".." + os.sep)
            or not resolved.is_relative_to(root)):
        raise ManifestError(describe("Link", "bundle entry", path, f"a link to '{link}'",
                                     "a relative link to a file or folder inside the bundle ("
                                     "staging never copies what lies outside it)", fix))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"
