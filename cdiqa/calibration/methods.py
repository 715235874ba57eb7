"""INT8 calibration: activation ranges from a domain's images, and the cache that keeps them.

A method is a class plus one row of ``METHODS`` (STYLE.md 7), not a branch of an if/elif
chain. Each wraps one of ONNX Runtime's calibrators with typed, explicit settings::

    minmax      [min, max] seen over the feeds: nothing clipped. For a full-reference model
                this is what keeps e = d(D) - d(R) intact: a clipped activation of the
                distorted image cannot differ from the reference's any more.
    entropy     TensorRT's choice: the threshold whose quantized histogram has least KL
                divergence from the original (symmetric, 2048 bins, 128 quantized bins).
    percentile  the 99.999th percentile of |x| (symmetric, 2048 bins): the default
                (``DEFAULT_METHOD``; docs/calibration.md has the measurements).

``collect_ranges(graph, reader, method)`` is a pure function of its inputs: it returns a
``CalibrationCache`` (tensor -> [lo, hi], plus the domain, the method and the sha256 of the
graph the ranges belong to). The cache is JSON, saved as ``calibration/<domain>.cache`` in
the bundle; ``cdiqa.calibration.int8`` writes the Q/DQ graph from it without any image.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Mapping

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import CalibrationError, ConfigError, describe

CACHE_FORMAT = "cdiqa.calibration-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class MinMax:
    """Observed minimum and maximum."""

    name: ClassVar[str] = "minmax"
    ort_method: ClassVar[str] = "MinMax"

    def ort_options(self) -> dict:
        """ONNX Runtime calibrator options (``create_calibrator(extra_options=...)``)."""
        return {"symmetric": False, "moving_average": False}


@dataclass(frozen=True)
class Entropy:
    """KL-divergence threshold (TensorRT's IInt8EntropyCalibrator2 idea)."""

    num_bins: int = 2048  # ORT's default 128 leaves one candidate threshold: the min-max one
    num_quantized_bins: int = 128
    name: ClassVar[str] = "entropy"
    ort_method: ClassVar[str] = "Entropy"

    def ort_options(self) -> dict:
        """ONNX Runtime calibrator options."""
        return {"symmetric": True, "num_bins": self.num_bins,
                "num_quantized_bins": self.num_quantized_bins}


@dataclass(frozen=True)
class Percentile:
    """A high percentile of |x|: clips the rare outliers."""

    percentile: float = 99.999
    num_bins: int = 2048
    name: ClassVar[str] = "percentile"
    ort_method: ClassVar[str] = "Percentile"

    def ort_options(self) -> dict:
        """ONNX Runtime calibrator options."""
        return {"symmetric": True, "num_bins": self.num_bins, "percentile": self.percentile}


#: method name -> its default settings
METHODS = {m.name: m for m in (MinMax(), Entropy(), Percentile())}
DEFAULT_METHOD = "percentile"


def method_named(name: str):
    """The method registered as ``name`` (``ConfigError`` listing the choices)."""
    import difflib

    if name not in METHODS:
        near = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f"Did you mean '{near[0]}'?" if near else "Pick one of them"
        raise ConfigError(describe("Method", "option", "--method", repr(name),
                                   f"one of {sorted(METHODS)}", hint))
    return METHODS[name]


@dataclass(frozen=True)
class CalibrationCache:
    """Activation ranges of one graph for one domain."""

    domain: str
    method: str
    graph_sha256: str
    ranges: dict[str, tuple[float, float]]
    feeds: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The cache file's text (sorted, so equal caches are equal bytes)."""
        d = {"format": CACHE_FORMAT, "version": CACHE_VERSION, **asdict(self)}
        d["ranges"] = {k: [float(a), float(b)] for k, (a, b) in sorted(self.ranges.items())}
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache atomically."""
        from cdiqa.files import atomic_write

        text = self.to_json().encode()
        return atomic_write(path, lambda f: f.write(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationCache":
        """Read a cache written by ``save`` (``CalibrationError`` naming the file if not)."""
        fix = "Recalibrate with `iqa-export calibrate BUNDLE --domain NAME`"
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CalibrationError(describe("Cache", "file", path, str(exc).splitlines()[0],
                                            "a calibration cache (JSON)", fix)) from None
        if not isinstance(d, dict) or d.get("format") != CACHE_FORMAT \
                or d.get("version") != CACHE_VERSION:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CalibrationError(describe("Cache format", "file", path, got,
                                            f"{CACHE_FORMAT} version {CACHE_VERSION}", fix))
        try:
            ranges = {k: (float(a), float(b)) for k, (a, b) in d["ranges"].items()}
            return cls(d["domain"], d["method"], d["graph_sha256"], ranges,
                       int(d.get("feeds", 0)), dict(d.get("versions", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(describe("Cache content", "file", path, repr(exc),
                                            "domain, method, graph_sha256, ranges", fix)) \
                from None

    def tensors_data(self):
        """The ranges as ONNX Runtime's ``TensorsData`` (what its quantizer reads)."""
        calib = _lazy.lazy_import("onnxruntime.quantization.calibrate", purpose="INT8 models")
        data = {k: calib.TensorData(lowest=np.array(a, np.float32),
                                    highest=np.array(b, np.float32))
                for k, (a, b) in self.ranges.items()}
        return calib.TensorsData(calib.CalibrationMethod.MinMax, data)


def collect_ranges(graph: str | os.PathLike, reader: Iterable[Mapping[str, np.ndarray]],
                   method=None, *, domain: str | None = None,
                   op_types: tuple[str, ...] = ("Conv",)) -> CalibrationCache:
    """Run ``graph`` on every feed of ``reader`` and choose each activation's range.

    Args:
        graph: an FP32 ONNX file (the domain's graph).
        reader: feeds (``DomainReader``); its ``domain`` names the cache unless ``domain``.
        method: a ``METHODS`` value or its name; None: ``DEFAULT_METHOD``.
        op_types: the ops whose inputs and outputs get ranges.

    Raises:
        CalibrationError: the reader yields nothing, or a range is not finite.
    """
    from cdiqa.manifest import sha256_file

    method = method_named(method or DEFAULT_METHOD) if not hasattr(method, "ort_method") \
        else method
    q = _lazy.lazy_import("onnxruntime.quantization", purpose="INT8 calibration")
    from cdiqa.calibration.readers import ort_reader

    domain = domain or getattr(reader, "domain", "unknown")
    counted = _Counted(reader)
    if len(counted) == 0:
        raise CalibrationError(describe("Feeds", "calibration reader", domain, 0,
                                        "at least one", "Give the domain some images"))
    with tempfile.TemporaryDirectory(prefix="cdiqa-calib-") as tmp:
        calibrator = q.create_calibrator(
            Path(graph), list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=getattr(q.CalibrationMethod, method.ort_method),
            extra_options=method.ort_options())
        with quiet():
            calibrator.collect_data(ort_reader(counted))
        if counted.n == 0:
            raise CalibrationError(describe("Feeds", "calibration reader", domain, 0,
                                            "at least one", "Give the domain some images"))
        with quiet():
            data = calibrator.compute_data()
        del calibrator
    ranges = {}
    for name, td in data.items():
        lo = float(np.asarray(td.range_value[0]).min())
        hi = float(np.asarray(td.range_value[1]).max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise CalibrationError(describe("Range", "tensor", name, (lo, hi), "finite values",
                                            "Check the calibration images"))
        ranges[name] = (lo, hi)
    from cdiqa.export.bundle import tool_versions

    versions = dict(tool_versions())
    versions["onnxruntime"] = _lazy.onnxruntime().__version__
    return CalibrationCache(domain, method.name, sha256_file(graph), ranges, counted.n,
                            versions)


@contextmanager
def quiet():
    """Silence ONNX Runtime's quantization prints and root-logger warnings (it suggests a
    pre-processing step that does not apply to this graph, and prints histogram progress)."""
    import io
    import logging
    from contextlib import redirect_stdout

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Counted:
    """An iterable that counts what it yielded (a reader may turn out empty)."""

    def __init__(self, reader) -> None:
        self.reader, self.n = reader, 0

    def __len__(self) -> int:
        return len(self.reader)

    def __iter__(self):
        for item in self.reader:
            self.n += 1
            yield item
