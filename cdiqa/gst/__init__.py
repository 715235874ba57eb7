"""GStreamer: the ``cdiqa`` element, cdiqa's scores inside a pipeline (gst-python).

::

    ref ─► sink_0 ─┐                      ┌─► src: sink_0's buffers, unchanged
    a   ─► sink_1 ─┼─► Scorer.score_pairs ┤
    b   ─► sink_2 ─┘   (one frame of each)└─► bus: one element message "cdiqa" per frame:
                                              frame, pts, scores={sink_1: q, sink_2: q}

Like gst-plugins-bad's ``iqa``: request sink pads ``sink_%u``, the one with the lowest number
the reference; the reference's buffers leave through ``src`` unchanged; per frame one element
message. Properties: ``bundle``, ``domain``, ``precision``, ``tile``, ``threads`` (those of
``iqa-export score``). Raw video in packed RGB/BGR (with or without alpha/padding) or GRAY8;
put ``videoconvert`` before it for other formats.

Two ways in:

- In a Python process: ``cdiqa.gst.register()``, then ``Gst.parse_launch("... cdiqa ...")``.
- ``gst-launch-1.0`` and other programs: ``eval "$(python -m cdiqa.gst)"`` sets
  ``GST_PLUGIN_PATH`` to ``PLUGIN_PATH`` (whose ``python/gstcdiqa.py`` the Python plugin
  loader, Debian's gstreamer1.0-python3-plugin-loader, imports) and ``CDIQA_GST_SITE`` to
  this Python's site-packages, so that the system interpreter GStreamer embeds finds cdiqa,
  numpy and onnxruntime. docs/runtime.md has a ``gst-launch-1.0`` example.

Needs GStreamer's introspection bindings (Debian: python3-gst-1.0, gir1.2-gst-plugins-base-1.0)
visible to this Python: in a virtual environment, ``.ci/run`` shows how (a ``.pth`` file for
Debian's ``gi``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from cdiqa.errors import BackendUnavailable

#: the folder to put on GST_PLUGIN_PATH (it holds ``python/gstcdiqa.py``)
PLUGIN_PATH = Path(__file__).resolve().parent / "plugins"
#: GStreamer's introspection namespaces the element needs
NAMESPACES = {"Gst": "1.0", "GstBase": "1.0", "GstVideo": "1.0"}
#: what to install when they are missing (Debian)
INSTALL = ("apt-get install python3-gst-1.0 gir1.2-gst-plugins-base-1.0 "
           "gstreamer1.0-plugins-base gstreamer1.0-python3-plugin-loader")


def unavailable_reason() -> str | None:
    """Why GStreamer's Python bindings cannot be used here, or None when they can."""
    try:
        import gi

        for name, version in NAMESPACES.items():
            gi.require_version(name, version)
        from gi.repository import Gst, GstBase, GstVideo  # noqa: F401
    except (ImportError, ValueError) as exc:
        return (f"GStreamer's Python bindings are not importable ({exc}); install them "
                f"({INSTALL}) and make Debian's 'gi' visible to this Python (see .ci/run)")
    return None


def register() -> None:
    """Register the ``cdiqa`` element in this process (idempotent).

    Raises:
        BackendUnavailable: GStreamer or its Python bindings are missing.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(reason)
    from cdiqa.gst.element import register as _register

    _register()


def environment() -> dict[str, str]:
    """The variables that let GStreamer programs (``gst-launch-1.0``) load the element.

    ``GST_PLUGIN_PATH``: ``PLUGIN_PATH`` before what it held. ``CDIQA_GST_SITE``: this
    Python's site-packages (and the checkout, when cdiqa is imported from one).
    ``GST_REGISTRY`` (unless already set): a registry file of its own for these paths:
    GStreamer caches a plugin file's elements until the file changes, so an import that once
    failed (say, before CDIQA_GST_SITE was set) would otherwise hide the element for good.
    """
    old = os.environ.get("GST_PLUGIN_PATH")
    paths = [p for p in dict.fromkeys((sysconfig.get_paths()["purelib"],
                                       sysconfig.get_paths()["platlib"])) if Path(p).is_dir()]
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the package
    if root not in paths and root in map(_abs, sys.path):
        paths.append(root)
    env = {"GST_PLUGIN_PATH": os.pathsep.join([str(PLUGIN_PATH)] + ([old] if old else [])),
           "CDIQA_GST_SITE": os.pathsep.join(paths)}
    if "GST_REGISTRY" not in os.environ:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha256("\0".join([env["CDIQA_GST_SITE"], str(PLUGIN_PATH)]).encode())
        name = f"registry.cdiqa-{key.hexdigest()[:12]}.bin"
        env["GST_REGISTRY"] = str(cache / "gstreamer-1.0" / name)
    return env


def _abs(p: str) -> str:
    return str(Path(p or ".").resolve())
