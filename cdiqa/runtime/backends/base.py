"""The backend protocol: ``Backend.load(manifest, device=...) -> Session``.

A backend is one file in this folder plus one line in ``cdiqa.runtime.backends.REGISTRY``.
Its session subclasses ``Session`` and overrides ``_infer`` only: the public ``infer``
validates the feed against the manifest first, so a wrong dtype, rank or channel count is
reported here, with the tensor's name, before any inference library sees it::

    infer(feed) ──► check_feed(feed, input_specs) ──► _infer(feed) ──► {sums, sumsq, counts}
                      ShapeError naming the tensor      backend-specific

Sessions are context managers and must allow ``infer`` from several threads at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from cdiqa.errors import ShapeError, describe
from cdiqa.manifest import INPUT_DIST, INPUT_REF, INPUT_ROI, Manifest, TensorSpec


@dataclass(frozen=True)
class SessionOptions:
    """Settings every backend understands (each uses what applies to it).

    Attributes:
        threads: CPU threads for one inference (None: the backend's default, all cores).
        cache_dir: where a backend may keep what it derived from the graph (an optimized
            ONNX model, a TensorRT engine), keyed by the graph's sha256. None: no cache.
        domain: the domain whose graph to open (an adapted domain has its own, see
            ``Manifest.model_entry``); None: the manifest's default domain.
        precision: "fp32", or "int8"/"fp16" for the domain's reduced-precision graph
            written by ``iqa-export calibrate``.
    """

    threads: int | None = None
    cache_dir: str | os.PathLike | None = None
    domain: str | None = None
    precision: str = "fp32"


@runtime_checkable
class Backend(Protocol):
    """Creates sessions for a bundle. ``name`` is its key in the registry."""

    name: str

    def load(self, manifest: Manifest, *, device: str | None = None,
             options: SessionOptions | None = None) -> "Session":
        """Open a session on the bundle of ``manifest`` (``BackendUnavailable`` if it can't)."""
        ...


class Session:
    """One loaded graph. Subclasses implement ``_infer`` and may override ``close``."""

    #: filled by the backend: the graph's inputs as the manifest describes them
    input_specs: tuple[TensorSpec, ...] = ()
    #: the names of the outputs ``infer`` returns
    output_names: tuple[str, ...] = ()
    #: the device the session runs on, in words ("cpu", "cuda:0")
    device: str = "cpu"

    def __init__(self, manifest: Manifest, device: str = "cpu") -> None:
        self.manifest = manifest
        self.input_specs = manifest.inputs
        self.output_names = tuple(t.name for t in manifest.outputs)
        self.device = device

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feed`` against ``input_specs``, then run the graph.

        Raises:
            ShapeError: a missing/unknown input, or one of wrong dtype, rank, channel count,
                or with sizes that disagree between inputs.
        """
        check_feed(feed, self.input_specs)
        return self._infer(feed)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the session's resources."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_feed(feed: Mapping[str, np.ndarray], specs: tuple[TensorSpec, ...]) -> None:
    """Raise ``ShapeError`` unless ``feed`` matches ``specs`` (the one place feeds are checked).

    Checks names, then per tensor dtype, rank and fixed dims, then that every symbolic dim
    (batch, height, width) has one size across the inputs.
    """
    names = {s.name for s in specs}
    missing, unknown = sorted(names - set(feed)), sorted(set(feed) - names)
    if missing or unknown:
        got = f"{sorted(feed)} (missing {missing}, unknown {unknown})"
        raise ShapeError(describe("Inputs", "graph", "feed", got, f"exactly {sorted(names)}",
                                  "Pass ref, dist and roi"))
    sizes: dict[str, tuple[str, int]] = {}
    for spec in specs:
        array = feed[spec.name]
        check_tensor(array, spec)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                first = sizes.setdefault(dim, (spec.name, array.shape[axis]))
                if first[1] != array.shape[axis]:
                    raise ShapeError(describe(
                        f"Size of '{dim}' (axis {axis})", "tensor", spec.name,
                        array.shape[axis], f"{first[1]} as in '{first[0]}'",
                        _SIZE_FIX.get(dim, "Give all inputs the same size")))


_SIZE_FIX = {"batch": "Give ref, dist and roi the same batch size",
             "height": "Reference and distorted images must have the same size",
             "width": "Reference and distorted images must have the same size"}


def check_tensor(array: np.ndarray, spec: TensorSpec) -> None:
    """Raise ``ShapeError`` unless ``array`` has the dtype, rank and fixed dims of ``spec``."""
    if not isinstance(array, np.ndarray):
        raise ShapeError(describe("Type", "tensor", spec.name, type(array).__name__,
                                  "numpy.ndarray", "Pass numpy arrays"))
    if array.dtype != np.dtype(spec.dtype):
        raise ShapeError(describe("Dtype", "tensor", spec.name, array.dtype, spec.dtype,
                                  f"Convert with .astype(np.{spec.dtype})"))
    if array.ndim != spec.rank:
        raise ShapeError(describe("Rank", "tensor", spec.name,
                                  f"{array.ndim} (shape {array.shape})",
                                  f"{spec.rank} {_shape(spec)}", _fix(spec)))
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and array.shape[axis] != dim:
            what = "Channels" if spec.name in (INPUT_REF, INPUT_DIST) and axis == 1 else \
                f"Size of axis {axis}"
            raise ShapeError(describe(what, "tensor", spec.name,
                                      f"{array.shape[axis]} (shape {array.shape})",
                                      f"{dim} {_shape(spec)}", _fix(spec)))


def _shape(spec: TensorSpec) -> str:
    return "(" + ", ".join(str(d) for d in spec.shape) + ")"


def _fix(spec: TensorSpec) -> str:
    if spec.name == INPUT_ROI:
        return "Pass one [y0, x0, y1, x1) row per pair"
    return "Pass RGB images as a batch in NCHW layout (cdiqa.runtime.preprocess does this)"
