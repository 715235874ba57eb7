"""Writing files so that a crash never leaves half of one; reading small ones with a bound
(stdlib only)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it over ``path``.

    A crash leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "xb") rather than mkstemp: the file gets the usual umask permissions, not 0600
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; never blocks.

    Opened non-blocking and checked on the open descriptor, so a FIFO, a device (a link to
    /dev/zero) or a file swapped in between is refused instead of read forever.

    Raises:
        ValueError: not a regular file, or larger than ``limit`` bytes (the reason as text).
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"not a regular file ({_kind(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # +1: tells a file over the limit from one at it
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than the limit of {limit} bytes")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


__all__ = ["atomic_write", "read_bounded"]
