"""Build the masking kernel to PTX (and cubin) with nvcc or NVRTC, cached on disk.

Two compilers, one result (:class:`PtxBuild`):

- **nvcc** (the CUDA toolkit), the default: ``nvcc --ptx -arch=compute_XY`` with warnings
  as errors (``-Werror all-warnings``), then ``nvcc -cubin -arch=sm_XY`` on that PTX with
  ``-Xptxas -v``, whose report (registers, spills, shared memory per kernel) is parsed into
  :class:`KernelResources`.
- **NVRTC** (``cuda.bindings.nvrtc``, imported lazily), used when nvcc is missing, or on a
  target whose driver is older than the nvcc at hand. PTX is only forward compatible: a
  driver JIT-compiles PTX of its own ISA version or older. nvcc 13.0 writes
  ``.version 9.0``; the JetPack 6 driver of a Jetson Orin (CUDA 12.6, L4T r36) accepts PTX
  up to ISA 8.5 and refuses it with ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION``, and a cubin made
  by a 13.x toolkit needs a 13.x driver too. Built on the target by that target's own
  libnvrtc (12.6 on JetPack 6), the PTX matches its driver. NVRTC has no ``-Werror``, so a
  warning in its log is raised as an error here.

Builds are cached under ``$CDIQA_CACHE/ptx`` (default ``~/.cache/cdiqa/ptx``), keyed by the
sha256 of the source and header bytes, the compiler and its version, the architecture and
the flags (:func:`cache_key`), so any change rebuilds.

>>> ARCHS
('sm_75', 'sm_80', 'sm_86', 'sm_87', 'sm_89', 'sm_90')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

from cdiqa.errors import BackendUnavailable, ConfigError, KernelError, describe
from cdiqa.kernels import MASKING_HEADER, MASKING_SOURCE

#: Architectures the masking kernel is built and checked for (Turing to Hopper, Jetson Orin).
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")
#: nvcc flags of the PTX step (the arch and file names are added per call).
NVCC_FLAGS = ("-std=c++17", "-O3", "-Werror", "all-warnings")
#: Extra flags of the cubin step: ptxas prints resources, and its warnings are errors too.
PTXAS_FLAGS = ("-Xptxas", "-v,--warning-as-error")
#: NVRTC options (the arch is added per call).
NVRTC_FLAGS = ("-std=c++17",)
#: Bumped when the layout of the cache or of a build changes.
_CACHE_FORMAT = "cdiqa-ptx-1"
#: How many lines of a compiler's output an error message shows.
ERROR_LINES = 15

Compiler = Literal["auto", "nvcc", "nvrtc"]


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reported for one kernel on one architecture."""

    registers: int
    spill_stores: int = 0
    spill_loads: int = 0
    stack_bytes: int = 0
    shared_bytes: int = 0


@dataclass(frozen=True)
class PtxBuild:
    """One build of the masking kernel for one architecture.

    Attributes:
        arch: ``sm_XY``.
        ptx: the PTX text (``.target sm_XY``), loadable with ``cuModuleLoadData``.
        cubin: machine code for exactly ``arch``, or ``None`` when not built.
        compiler: ``"nvcc 13.0.88"`` or ``"nvrtc 13.0"``.
        key: the cache key (sha256 hex).
        resources: ptxas report per kernel name (empty without a cubin).
        log: the compilers' messages.
        cached: whether this came from the cache.
    """

    arch: str
    ptx: str
    cubin: bytes | None
    compiler: str
    key: str
    resources: Mapping[str, KernelResources] = field(default_factory=dict)
    log: str = ""
    cached: bool = False

    @property
    def entry_names(self) -> list[str]:
        """The ``.entry`` (kernel) names in the PTX."""
        return ptx_entry_names(self.ptx)


# ----------------------------------------------------------------------------- helpers


def check_arch(arch: str) -> str:
    """Validate an ``sm_XY`` architecture name and return it."""
    if not isinstance(arch, str) or not re.fullmatch(r"sm_\d{2,3}[af]?", arch):
        raise ConfigError(describe("Architecture", "option", "arch", repr(arch),
                                   "a name like 'sm_90'", f"Use one of {', '.join(ARCHS)}"))
    return arch


def arch_from_capability(major: int, minor: int) -> str:
    """``(9, 0)`` -> ``"sm_90"``."""
    return f"sm_{int(major)}{int(minor)}"


def cache_dir() -> Path:
    """``$CDIQA_CACHE/ptx`` if set, else ``~/.cache/cdiqa/ptx``."""
    root = os.environ.get("CDIQA_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "cdiqa"
    return base / "ptx"


def cache_key(sources: Mapping[str, bytes], compiler: str, arch: str,
              flags: Sequence[str]) -> str:
    """sha256 over the sources (name and bytes), compiler with version, arch and flags.

    >>> k = cache_key({"a.cu": b"x"}, "nvcc 13.0.88", "sm_90", ["-O3"])
    >>> k != cache_key({"a.cu": b"y"}, "nvcc 13.0.88", "sm_90", ["-O3"])
    True
    """
    h = hashlib.sha256()
    for part in (_CACHE_FORMAT, compiler, arch, *flags):
        h.update(part.encode() + b"\0")
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    return h.hexdigest()


_ENTRY = re.compile(r"^\s*\.(?:visible\s+|weak\s+)?\.?entry\s+([A-Za-z_$][\w$]*)", re.M)


def ptx_entry_names(ptx: str) -> list[str]:
    """Kernel names declared by ``.entry`` in PTX text, in order."""
    return _ENTRY.findall(ptx)


_FUNC = re.compile(r"(?:Compiling entry function|Function properties for)\s+'?([\w$]+)'?")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_report(text: str) -> dict[str, KernelResources]:
    """Parse ``ptxas -v`` output (nvcc or NVRTC log) into resources per kernel.

    >>> r = parse_ptxas_report(
    ...     "ptxas info    : Compiling entry function 'k' for 'sm_90'\\n"
    ...     "ptxas info    : Function properties for k\\n"
    ...     "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\\n"
    ...     "ptxas info    : Used 62 registers, used 1 barriers, 19776 bytes smem\\n")
    >>> r["k"]
    KernelResources(registers=62, spill_stores=4, spill_loads=4, stack_bytes=8, shared_bytes=19776)
    """
    found: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            name = m.group(1)
            found.setdefault(name, {})
            continue
        if name is None:
            continue
        m = _SPILL.search(line)
        if m:
            found[name].update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)),
                               spill_loads=int(m.group(3)))
        m = _USED.search(line)
        if m:
            found[name]["registers"] = int(m.group(1))
            s = _SMEM.search(line)
            found[name]["shared_bytes"] = int(s.group(1)) if s else 0
    return {n: KernelResources(**v) for n, v in found.items() if "registers" in v}


def _first_lines(text: str, n: int = ERROR_LINES) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # error lines first: that is what the reader needs
    errors = [ln for ln in lines if "error" in ln.lower()]
    picked = errors[:n] if errors else lines[:n]
    return "\n".join("    " + ln for ln in picked)


def _has_warning(log: str) -> bool:
    return re.search(r"\bwarning\b", log, re.I) is not None


def _sources() -> dict[str, bytes]:
    return {MASKING_SOURCE.name: MASKING_SOURCE.read_bytes(),
            MASKING_HEADER.name: MASKING_HEADER.read_bytes()}


def _define_flags(defines: Mapping[str, object] | Iterable[str]) -> list[str]:
    items = defines.items() if isinstance(defines, Mapping) else ((d, None) for d in defines)
    out = []
    for name, value in items:
        if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
            raise ConfigError(describe("Macro name", "option", "defines", repr(name),
                                       "a C identifier", "Pass names like CDIQA_MASKING_MIN_BLOCKS"))
        out.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return sorted(out)


# ----------------------------------------------------------------------------- compilers


def find_nvcc() -> str | None:
    """Path of nvcc: ``$CUDA_HOME``/``$CUDA_PATH``, then ``PATH``, then /usr/local/cuda."""
    for env in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(env)
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


@lru_cache(maxsize=8)
def nvcc_version(nvcc: str) -> str:
    """``"13.0.88"`` from ``nvcc --version``."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"nvcc at '{nvcc}' could not run ({exc}); install the CUDA "
                                 "toolkit or put a working nvcc on PATH.") from None
    m = re.search(r"V(\d+\.\d+\.\d+)", out.stdout) or re.search(r"release (\d+\.\d+)", out.stdout)
    if out.returncode != 0 or not m:
        raise BackendUnavailable(f"nvcc at '{nvcc}' gave no version (exit {out.returncode}); "
                                 "install the CUDA toolkit or put a working nvcc on PATH.")
    return m.group(1)


def _nvrtc():
    from cdiqa import _lazy

    return _lazy.lazy_import("cuda.bindings.nvrtc", purpose="Building kernels with NVRTC")


@lru_cache(maxsize=1)
def nvrtc_version() -> str | None:
    """``"13.0"`` when NVRTC (cuda-python and libnvrtc) can be loaded, else ``None``."""
    try:
        nvrtc = _nvrtc()
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception:  # BackendUnavailable, or libnvrtc not found by cuda-python
        return None
    return f"{major}.{minor}" if int(err) == 0 else None


def version_number(version: str) -> int:
    """``"12.6"`` / ``"13.0.88"`` -> 12060 / 13000, the format of ``cuDriverGetVersion``."""
    parts = [int(p) for p in version.split(".")[:2]] + [0]
    return parts[0] * 1000 + parts[1] * 10


def choose_compiler(compiler: Compiler = "auto", driver_version: int | None = None) -> str:
    """Resolve ``"auto"``: nvcc, unless it is missing or newer than the driver; then NVRTC.

    Args:
        compiler: ``"auto"``, ``"nvcc"`` or ``"nvrtc"``.
        driver_version: ``cuDriverGetVersion()`` of the target (e.g. 12060), if known.
    """
    if compiler not in ("auto", "nvcc", "nvrtc"):
        raise ConfigError(describe("Compiler", "option", "compiler", repr(compiler),
                                   "'auto', 'nvcc' or 'nvrtc'", "Pick one of those"))
    if compiler != "auto":
        return compiler
    nvcc = find_nvcc()
    has_nvrtc = nvrtc_version() is not None
    if nvcc and driver_version and version_number(nvcc_version(nvcc)) > driver_version \
            and has_nvrtc:
        return "nvrtc"  # the PTX of a newer nvcc would not load on this driver
    if nvcc:
        return "nvcc"
    if has_nvrtc:
        return "nvrtc"
    raise BackendUnavailable("Building the masking kernel needs nvcc (CUDA toolkit) or NVRTC "
                             "(cuda-python with libnvrtc); found neither. Install the CUDA "
                             "toolkit, or 'cdiqa[cuda]' plus nvidia-cuda-nvrtc.")


def _compile_nvcc(arch: str, flags: list[str], want_cubin: bool) -> tuple[str, bytes | None, str]:
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendUnavailable("Building with nvcc needs the CUDA toolkit; nvcc was not found "
                                 "in $CUDA_HOME, on PATH or in /usr/local/cuda. Install it or "
                                 "use compiler='nvrtc'.")
    number = arch.split("_", 1)[1]
    with tempfile.TemporaryDirectory(prefix="cdiqa-nvcc-") as tmp:
        ptx_path = Path(tmp) / "masking.ptx"
        cmd = [nvcc, "--ptx", f"-arch=compute_{number}", *flags, str(MASKING_SOURCE),
               "-o", str(ptx_path)]
        log = _run(cmd, arch)
        ptx = ptx_path.read_text()
        cubin = None
        if want_cubin:
            cubin_path = Path(tmp) / "masking.cubin"
            cmd = [nvcc, "-cubin", f"-arch=sm_{number}", "-Werror", "all-warnings",
                   *PTXAS_FLAGS, str(ptx_path), "-o", str(cubin_path)]
            log += _run(cmd, arch)
            cubin = cubin_path.read_bytes()
    return ptx, cubin, log


def _run(cmd: list[str], arch: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(describe("Compilation", "file", MASKING_SOURCE.name, str(exc),
                                  "nvcc to finish", "Check the CUDA toolkit install")) from None
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise KernelError(describe("Compilation", "file", MASKING_SOURCE.name,
                                  f"nvcc exit status {out.returncode} for {arch}", "0",
                                  "Fix the first errors below") + "\n" + _first_lines(log))
    return log


def _compile_nvrtc(arch: str, flags: list[str], want_cubin: bool) -> tuple[str, bytes | None, str]:
    nvrtc = _nvrtc()
    number = arch.split("_", 1)[1]
    # sm_XY gives both PTX (.target sm_XY) and a cubin; compute_XY gives PTX only
    target = f"sm_{number}" if want_cubin else f"compute_{number}"
    opts = [f"--gpu-architecture={target}", *flags]
    if want_cubin:
        opts.append("--ptxas-options=-v")
    src = MASKING_SOURCE.read_bytes()
    hdr = MASKING_HEADER.read_bytes()
    err, prog = nvrtc.nvrtcCreateProgram(src, MASKING_SOURCE.name.encode(), 1, [hdr],
                                         [MASKING_HEADER.name.encode()])
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram", arch, "")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        log = _nvrtc_log(nvrtc, prog)
        _nvrtc_check(nvrtc, err, "nvrtcCompileProgram", arch, log)
        if _has_warning(log):
            raise KernelError(describe("Compilation", "file", MASKING_SOURCE.name,
                                      f"NVRTC warnings for {arch}", "none",
                                      "Warnings are errors; fix them") + "\n" + _first_lines(log))
        err, size = nvrtc.nvrtcGetPTXSize(prog)
        _nvrtc_check(nvrtc, err, "nvrtcGetPTXSize", arch, log)
        buf = b" " * size
        (err,) = nvrtc.nvrtcGetPTX(prog, buf)
        _nvrtc_check(nvrtc, err, "nvrtcGetPTX", arch, log)
        ptx = buf.rstrip(b"\0").decode()
        cubin = None
        if want_cubin:
            err, size = nvrtc.nvrtcGetCUBINSize(prog)
            _nvrtc_check(nvrtc, err, "nvrtcGetCUBINSize", arch, log)
            cbuf = b" " * size
            (err,) = nvrtc.nvrtcGetCUBIN(prog, cbuf)
            _nvrtc_check(nvrtc, err, "nvrtcGetCUBIN", arch, log)
            cubin = bytes(cbuf)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return ptx, cubin, log


def _nvrtc_log(nvrtc, prog) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if int(err) != 0 or size <= 1:
        return ""
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\0").decode(errors="replace")


def _nvrtc_check(nvrtc, err, call: str, arch: str, log: str) -> None:
    if int(err) == 0:
        return
    _, name = nvrtc.nvrtcGetErrorString(err)
    name = name.decode() if isinstance(name, bytes) else str(name)
    raise KernelError(describe("Compilation", "file", MASKING_SOURCE.name,
                              f"{call} -> {name} for {arch}", "NVRTC_SUCCESS",
                              "Fix the first errors below") + ("\n" + _first_lines(log) if log else ""))


# ----------------------------------------------------------------------------- public API


def ptx_from_cuda(arch: str = "sm_90", *, compiler: Compiler = "auto", cubin: bool = True,
                  cache: bool = True, defines: Mapping[str, object] | Iterable[str] = (),
                  driver_version: int | None = None) -> PtxBuild:
    """Build ``masking.cu`` for ``arch`` (or take it from the cache).

    Args:
        arch: ``sm_XY`` of the target GPU.
        compiler: ``"nvcc"``, ``"nvrtc"`` or ``"auto"`` (:func:`choose_compiler`).
        cubin: also build machine code for ``arch`` (and the ptxas resource report).
        cache: read and write the on-disk cache (:func:`cache_dir`).
        defines: extra macros, e.g. ``{"CDIQA_MASKING_MIN_BLOCKS": 3}`` (tuning only).
        driver_version: the target driver's ``cuDriverGetVersion()``, for ``"auto"``.

    Raises:
        BackendUnavailable: no usable compiler.
        CdiqaError: compilation failed or warned; the message shows the first error lines.
    """
    arch = check_arch(arch)
    which = choose_compiler(compiler, driver_version)
    extra = _define_flags(defines)
    if which == "nvcc":
        version = f"nvcc {nvcc_version(find_nvcc())}"
        flags = [*NVCC_FLAGS, *extra]
        key_flags = [*flags, *PTXAS_FLAGS] if cubin else flags
    else:
        v = nvrtc_version()
        if v is None:
            raise BackendUnavailable("Building with NVRTC needs cuda-python and libnvrtc "
                                     "(pip 'nvidia-cuda-nvrtc' or a CUDA toolkit); NVRTC could "
                                     "not be loaded. Install them or use compiler='nvcc'.")
        version = f"nvrtc {v}"
        flags = [*NVRTC_FLAGS, *extra]
        key_flags = [*flags, "cubin"] if cubin else flags
    key = cache_key(_sources(), version, arch, key_flags)
    if cache:
        hit = _cache_read(key)
        if hit is not None:
            return hit
    compile_fn = _compile_nvcc if which == "nvcc" else _compile_nvrtc
    ptx, binary, log = compile_fn(arch, flags, cubin)
    build = PtxBuild(arch=arch, ptx=ptx, cubin=binary, compiler=version, key=key,
                     resources=parse_ptxas_report(log), log=log)
    if cache:
        _cache_write(build)
    return build


def ptx_for_archs(archs: Sequence[str] = ARCHS, **options) -> dict[str, PtxBuild]:
    """:func:`ptx_from_cuda` for several architectures, in parallel (one process each)."""
    archs = [check_arch(a) for a in archs]
    workers = max(1, min(len(archs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        builds = list(pool.map(lambda a: ptx_from_cuda(a, **options), archs))
    return dict(zip(archs, builds))


def _cache_read(key: str) -> PtxBuild | None:
    folder = cache_dir()
    meta_path = folder / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        ptx = (folder / f"{key}.ptx").read_text()
        cubin_path = folder / f"{key}.cubin"
        cubin = cubin_path.read_bytes() if meta.get("has_cubin") else None
        resources = {n: KernelResources(**r) for n, r in meta.get("resources", {}).items()}
        return PtxBuild(arch=meta["arch"], ptx=ptx, cubin=cubin, compiler=meta["compiler"],
                        key=key, resources=resources, log=meta.get("log", ""), cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged entry: rebuild


def _cache_write(build: PtxBuild) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / f"{build.key}.ptx", build.ptx.encode())
        if build.cubin is not None:
            _atomic_write(folder / f"{build.key}.cubin", build.cubin)
        meta = {"arch": build.arch, "compiler": build.compiler, "has_cubin": build.cubin is not None,
                "resources": {n: asdict(r) for n, r in build.resources.items()}, "log": build.log}
        _atomic_write(folder / f"{build.key}.json", json.dumps(meta, indent=1).encode())
    except OSError:
        pass  # a read-only or full cache only costs a rebuild next time


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["ARCHS", "KernelResources", "PtxBuild", "arch_from_capability", "cache_dir",
           "cache_key", "choose_compiler", "find_nvcc", "nvcc_version", "nvrtc_version",
           "parse_ptxas_report", "ptx_entry_names", "ptx_for_archs", "ptx_from_cuda",
           "version_number"]
