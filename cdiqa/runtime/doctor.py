"""``iqa-export doctor``: what this machine has for running cdiqa on a GPU, and what is missing.

Each row is one component (GPU, driver, CUDA runtime, nvcc, TensorRT, the QDP plugin API,
cuda-python, ONNX Runtime and its providers) with its version, or "not found" and the reason.
Nothing here needs a GPU to run: every probe catches its own failure and reports it.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from dataclasses import asdict, dataclass

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable

NOT_FOUND = "not found"


@dataclass(frozen=True)
class Finding:
    """One row of the report: ``value`` is a version/name, or "not found" with ``detail``."""

    component: str
    value: str
    detail: str = ""

    @property
    def found(self) -> bool:
        """Whether the component is present."""
        return self.value != NOT_FOUND


def _missing(component: str, reason: str) -> Finding:
    return Finding(component, NOT_FOUND, reason)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def probe_cuda() -> list[Finding]:
    """GPU(s), driver and CUDA runtime through cuda-python, else through nvidia-smi."""
    try:
        rt = _lazy.lazy_import("cuda.bindings.runtime", purpose="Probing the GPU")
    except BackendUnavailable as exc:
        return _probe_smi(f"cuda-python: {_first_line(exc)}")
    try:
        _, driver = rt.cudaDriverGetVersion()
        _, runtime = rt.cudaRuntimeGetVersion()
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # the bindings raise when a CUDA library cannot load
        return _probe_smi(f"cuda-python could not start CUDA: {_first_line(exc)}")
    out = [Finding("CUDA runtime (cuda-python)", _cuda_version(int(runtime)))]
    out.append(Finding("driver (CUDA API)", _cuda_version(int(driver))) if int(driver) else
               _missing("driver (CUDA API)", "no NVIDIA driver (libcuda) on this machine"))
    if int(err) != 0 or not count:
        reason = getattr(err, "name", str(err)) if int(err) != 0 else "the driver sees no GPU"
        smi = _probe_smi(reason)
        return out + smi
    for index in range(count):
        e, props = rt.cudaGetDeviceProperties(index)
        if int(e) != 0:
            out.append(_missing(f"GPU {index}", getattr(e, "name", str(e))))
            continue
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(
            props.name)
        mem = props.totalGlobalMem / 2**30
        out.append(Finding(f"GPU {index}", name.rstrip("\0"),
                           f"sm_{props.major}{props.minor}, {mem:.1f} GiB"))
    return out


def _probe_smi(reason: str) -> list[Finding]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [_missing("GPU", f"{reason}; nvidia-smi not on PATH")]
    try:
        proc = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [_missing("GPU", f"{reason}; nvidia-smi failed: {_first_line(exc)}")]
    rows = [r.split(", ") for r in proc.stdout.strip().splitlines() if r.strip()]
    if proc.returncode != 0 or not rows:
        return [_missing("GPU", f"{reason}; nvidia-smi: {proc.stderr.strip()[:120] or 'no GPU'}")]
    out = [Finding("driver (nvidia-smi)", rows[0][1] if len(rows[0]) > 1 else "?")]
    out += [Finding(f"GPU {i}", r[0], f"sm_{r[2].replace('.', '')}" if len(r) > 2 else "")
            for i, r in enumerate(rows)]
    return out


def probe_nvcc() -> Finding:
    """nvcc (builds the C++ plugin and the PTX) on PATH or in /usr/local/cuda."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if shutil.which("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        return _missing("nvcc", "CUDA toolkit not on PATH (the QDP plugin can use NVRTC)")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _missing("nvcc", _first_line(exc))
    line = [ln for ln in out.stdout.splitlines() if "release" in ln]
    return Finding("nvcc", line[0].split("release")[-1].strip(" ,") if line else "?", nvcc)


def probe_tensorrt() -> list[Finding]:
    """TensorRT's Python package and its plugin API (tensorrt.plugin, 10.8+)."""
    from cdiqa._lazy import require_tensorrt

    try:
        trt = require_tensorrt("the TensorRT backend")
    except BackendUnavailable as exc:
        return [_missing("TensorRT", _first_line(exc)),
                _missing("TensorRT QDP plugins", "needs TensorRT >= 10.8")]
    out = [Finding("TensorRT", trt.__version__,
                   "strongly typed only (no BuilderFlag.FP16)"
                   if not hasattr(trt.BuilderFlag, "FP16") else "")]
    try:
        _lazy.lazy_import("tensorrt.plugin", purpose="The masking QDP plugin")
        out.append(Finding("TensorRT QDP plugins", "tensorrt.plugin"))
    except (BackendUnavailable, OSError) as exc:
        out.append(_missing("TensorRT QDP plugins", _first_line(exc)))
    return out


def probe_packages() -> list[Finding]:
    """cuda-python and ONNX Runtime (with its execution providers)."""
    out = []
    try:
        out.append(Finding("cuda-python", importlib.metadata.version("cuda-python")))
    except importlib.metadata.PackageNotFoundError:
        try:
            out.append(Finding("cuda-python", importlib.metadata.version("cuda-bindings")))
        except importlib.metadata.PackageNotFoundError:
            out.append(_missing("cuda-python", "install 'cdiqa[cuda]'"))
    try:
        ort = _lazy.onnxruntime()
        out.append(Finding("ONNX Runtime", ort.__version__,
                           ", ".join(ort.get_available_providers())))
    except BackendUnavailable as exc:
        out.append(_missing("ONNX Runtime", _first_line(exc)))
    return out


def diagnose() -> list[Finding]:
    """Every probe, in reading order."""
    return [*probe_cuda(), probe_nvcc(), *probe_tensorrt(), *probe_packages()]


def report_table(findings: list[Finding]) -> str:
    """A plain-text table: component, value, detail."""
    rows = [("component", "found", "detail")] + [(f.component, f.value, f.detail)
                                                 for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows]
    lines.insert(1, "-" * (widths[0] + widths[1] + 10))
    return "\n".join(lines)


def report_dict(findings: list[Finding]) -> list[dict]:
    """JSON-friendly rows."""
    return [{**asdict(f), "found": f.found} for f in findings]


__all__ = ["Finding", "NOT_FOUND", "diagnose", "probe_cuda", "probe_nvcc", "probe_packages",
           "probe_tensorrt", "report_dict", "report_table"]
