"""Backends: an explicit table of lazy ``"module:attr"`` strings.

Listing or naming backends imports nothing heavy; a backend's module (and its library) is
imported when it is resolved. Adding a backend = one file here + one line in ``REGISTRY`` +
its test (the contract tests run over the whole table).

>>> sorted(REGISTRY)
['onnxruntime', 'tensorrt']
"""

from __future__ import annotations

import difflib
import importlib

from cdiqa.errors import BackendUnavailable, ConfigError, describe
from cdiqa.runtime.backends.base import Backend, Session, SessionOptions, check_feed, check_tensor

#: name -> "module:attr" of the backend class
REGISTRY: dict[str, str] = {
    "onnxruntime": "cdiqa.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "cdiqa.runtime.backends.tensorrt:TensorRTBackend",
}
#: what ``backend="auto"`` tries, in order: the first that loads wins
AUTO_ORDER = ("tensorrt", "onnxruntime")

__all__ = ["AUTO_ORDER", "REGISTRY", "Backend", "Session", "SessionOptions", "check_feed",
           "check_tensor", "get_backend"]


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered as ``name``.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the choices and the
            nearest name; it never switches to it silently).
        BackendUnavailable: the backend's module is not installed in this copy of cdiqa.
    """
    if name not in REGISTRY:
        near = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"Did you mean '{near[0]}'?" if near else "Pick one of the registered backends"
        raise ConfigError(describe("Backend", "runtime", "backend", repr(name),
                                   f"'auto' or one of {sorted(REGISTRY)}", hint))
    module_name, attr = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the backend is here, a library it imports is not
            from cdiqa import _lazy

            _lazy.lazy_import(exc.name or module_name, purpose=f"Backend '{name}'")
            raise
        raise BackendUnavailable(f"Backend '{name}' is not part of this installation: module "
                                 f"'{module_name}' is missing. Use backend='onnxruntime' or "
                                 "install a cdiqa build that ships it.") from None
    return getattr(module, attr)()
