"""Writing files so that a crash never leaves half of one (stdlib only)."""

from __future__ import annotations

import os
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


__all__ = ["atomic_write"]
