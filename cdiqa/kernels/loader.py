"""Run the masking kernels outside TensorRT, through the CUDA driver API of cuda-python.

:class:`MaskingKernel` builds ``masking.cu`` for the GPU it finds (:mod:`cdiqa.kernels.ptx`),
loads it into the device's primary context (the one PyTorch and CuPy use too), and offers

- :meth:`MaskingKernel.stats` for host numpy arrays (allocates, copies, launches, syncs), and
- :meth:`MaskingKernel.launch` for device pointers (ints, or anything with ``data_ptr()``
  or ``__cuda_array_interface__``) on a stream, which is what the benchmarks use.

Every driver call is checked; a failure raises with the ``CUresult`` name. Without
cuda-python, a driver or a GPU, the constructor raises ``BackendUnavailable`` with a
one-line reason. Launch geometry is documented in ``masking/README.md`` ("Launch") and its
constants are mirrored from ``masking.cuh`` and ``spec.yaml`` (tests/kernels/test_spec.py).
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np

from cdiqa import _lazy
from cdiqa.errors import BackendUnavailable, CdiqaError, ConfigError, KernelError, ShapeError, describe

#: Threads per block of both kernels (CDIQA_MASKING_THREADS); the kernels need exactly this.
THREADS = 256
#: Output tile of one block of pass 1 (CDIQA_MASKING_TILE_H, CDIQA_MASKING_TILE_W).
TILE_H, TILE_W = 32, 32
#: Planes per block of pass 2 (CDIQA_MASKING_REDUCE_PLANES): one warp each.
REDUCE_PLANES = 8
#: Largest H or W (CDIQA_MASKING_MAX_SIDE).
MAX_SIDE = 1 << 30
#: Largest B*C (CDIQA_MASKING_MAX_PLANES = 65535^2: grid y * z) and tiles per plane (grid x).
MAX_PLANES = 65535 * 65535
MAX_TILES = 2**31 - 1
#: Tiles-per-block heuristic (CDIQA_MASKING_PLANES_FOR_ONE_BLOCK, _TARGET_BLOCKS).
PLANES_FOR_ONE_BLOCK = 1024
TARGET_BLOCKS = 2048
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535
#: Kernel names per input dtype, and of pass 2.
ENTRY_POINTS = {"float32": "masking_stats_f32", "float16": "masking_stats_f16"}
REDUCE_ENTRY = "masking_reduce"
#: A quiet NaN (float32 bits): stats and workspace are filled with it before a launch, so
#: anything the kernels fail to write shows up.
NAN_BITS = 0x7FC00000
_INT_MAX = 2**31 - 1

Dtype = Literal["float32", "float16"]


# ----------------------------------------------------------------------------- geometry
# Mirrors of the host functions in masking.cu (README.md "Launch"); keep them in step.


def tiles_per_plane(H: int, W: int) -> int:
    """32 x 32 tiles of one (b, c) plane: ceil(H/32) * ceil(W/32)."""
    return -(-H // TILE_H) * -(-W // TILE_W)


def tiles_per_block(B: int, C: int, H: int, W: int) -> int:
    """Tiles of one plane per block of pass 1 (``cdiqa_masking_tiles_per_block``).

    One block per plane once there are >= 1024 planes (no pass 2); else segments sized
    for about 2048 blocks.

    >>> tiles_per_block(8, 128, 96, 128), tiles_per_block(1, 32, 480, 270)
    (12, 2)
    """
    ntiles = tiles_per_plane(H, W)
    planes = B * C
    if planes >= PLANES_FOR_ONE_BLOCK:
        return ntiles
    return max(1, min(ntiles, planes * ntiles // TARGET_BLOCKS))


def _tpb(B: int, C: int, H: int, W: int, tpb: int | None) -> int:
    if tpb is None:
        return tiles_per_block(B, C, H, W)
    if int(tpb) != tpb or tpb < 1:
        raise ConfigError(describe("Tiles per block", "argument", "tiles_per_block", tpb,
                                   "an integer >= 1 (or None for the default)", "Pass None"))
    return min(int(tpb), tiles_per_plane(H, W))


def segments_per_plane(B: int, C: int, H: int, W: int, tpb: int | None = None) -> int:
    """Blocks of pass 1 per plane (each writes one partial unless it covers the plane).

    ``tpb`` overrides :func:`tiles_per_block` (tuning experiments); ``None`` is the default.
    """
    return -(-tiles_per_plane(H, W) // _tpb(B, C, H, W, tpb))


def workspace_size(B: int, C: int, H: int, W: int, tpb: int | None = None) -> int:
    """Bytes of workspace (segment partials): 0 when one block covers a plane.

    >>> workspace_size(8, 128, 96, 128), workspace_size(1, 32, 480, 270)
    (0, 17408)
    """
    segments = segments_per_plane(B, C, H, W, tpb)
    return 0 if segments == 1 else B * C * segments * 2 * 4


def stats_grid(B: int, C: int, H: int, W: int, tpb: int | None = None) -> tuple[int, int, int]:
    """Grid of pass 1: (segments, min(B*C, 65535), ceil(B*C / 65535))."""
    planes = B * C
    gy = min(planes, MAX_GRID_YZ)
    return segments_per_plane(B, C, H, W, tpb), gy, -(-planes // gy)


def reduce_grid(B: int, C: int) -> int:
    """Blocks of pass 2 (it loops over planes, so the cap is harmless)."""
    return min(-(-(B * C) // REDUCE_PLANES), MAX_GRID_X)


def check_launch(B: int, C: int, H: int, W: int, k: int, dtype: str) -> None:
    """Raise ``ShapeError``/``ConfigError`` unless the kernels accept these arguments."""
    for name, value, hi in (("B", B, _INT_MAX), ("C", C, _INT_MAX), ("H", H, MAX_SIDE),
                            ("W", W, MAX_SIDE)):
        if int(value) != value or not 1 <= value <= hi:
            raise ShapeError(describe("Dimension", "tensor", f"e.{name}", value,
                                      f"an integer in [1, {hi}]", "Pass a non-empty NCHW map"))
    if B * C > MAX_PLANES or tiles_per_plane(H, W) > MAX_TILES:
        raise ShapeError(describe("Size", "tensor", "e", (B, C, H, W),
                                  f"B*C <= {MAX_PLANES} and H*W <= {MAX_TILES} tiles of 32 x 32",
                                  "Split the batch or the image"))
    if int(k) != k or k < 1 or k % 2 == 0 or k > _INT_MAX:
        raise ConfigError(describe("Window", "attribute", "k", k, "an odd integer >= 1",
                                   "Use k = 3, 5 or 7"))
    if dtype not in ENTRY_POINTS:
        raise ConfigError(describe("Dtype", "tensor", "e", dtype, "float32 or float16",
                                   "Cast the maps"))


# ----------------------------------------------------------------------------- driver calls


def _driver():
    return _lazy.cuda_driver()


def _error_name(cu, err) -> str:
    try:
        res, name = cu.cuGetErrorName(err)
        if int(res) == 0 and name:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is only for the message
        pass
    return getattr(err, "name", None) or f"CUresult {int(err)}"


def _check(cu, result, call: str, hint: str = "") -> Any:
    """Unpack a cuda-python result tuple, raising on any CUresult but CUDA_SUCCESS."""
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        msg = f"CUDA call {call} failed: {_error_name(cu, err)} ({int(err)})."
        raise KernelError(f"{msg} {hint}".strip())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _address(x: Any, name: str) -> int:
    """A device address from an int, a CUdeviceptr, torch (data_ptr) or CUDA array interface."""
    if x is None:
        return 0
    if isinstance(x, (int, np.integer)):
        return int(x)
    if hasattr(x, "data_ptr"):
        return int(x.data_ptr())
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    try:
        return int(x)
    except (TypeError, ValueError):
        raise ConfigError(describe("Pointer", "argument", name, type(x).__name__,
                                   "an int, a CUdeviceptr or a CUDA tensor",
                                   "Pass tensor.data_ptr()")) from None


def _stream_handle(stream: Any) -> int:
    if stream is None:
        return 0
    for attr in ("cuda_stream", "ptr", "handle"):  # torch.cuda.Stream, cupy, cuda.core
        if hasattr(stream, attr) and not isinstance(stream, int):
            return int(getattr(stream, attr))
    return int(stream)


class _Params:
    """kernelParams for cuLaunchKernel: an array of pointers to the argument values.

    cuda-python takes the array's address as an int; the values must stay alive until the
    call returns (the driver copies them at launch), which the caller's reference ensures.
    """

    def __init__(self, args: list[tuple[type, int]]):
        self._values = [ctype(value) for ctype, value in args]
        self._array = (ctypes.c_void_p * len(self._values))(
            *[ctypes.addressof(v) for v in self._values])

    @property
    def address(self) -> int:
        return ctypes.addressof(self._array)


# ----------------------------------------------------------------------------- the kernel


class MaskingKernel:
    """The fused masking op on one GPU, through the CUDA driver API.

    Args:
        device: CUDA device ordinal.
        compiler: ``"auto"``, ``"nvcc"`` or ``"nvrtc"`` (see :mod:`cdiqa.kernels.ptx`).
        cache: use the on-disk PTX cache.
        defines: extra macros for the build (tuning experiments only).

    Raises:
        BackendUnavailable: no cuda-python, driver, GPU or compiler; the message says which.

    Example (needs a GPU)::

        with MaskingKernel() as kernel:
            stats = kernel.stats(e, a, gamma, sigma, k=3)   # (B, 2, C) float32
    """

    def __init__(self, device: int = 0, *, compiler: str = "auto", cache: bool = True,
                 defines: Mapping[str, object] | tuple = ()):
        self._cu = cu = _driver()
        self._ctx = None
        self._module = None
        try:
            (err,) = cu.cuInit(0)
        except Exception as exc:  # cuda-python raises when libcuda itself cannot be loaded
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"CUDA kernels need an NVIDIA GPU and driver: {reason}"
                                     ) from None
        if int(err) != 0:
            raise BackendUnavailable("CUDA kernels need an NVIDIA GPU and driver: cuInit "
                                     f"returned {_error_name(cu, err)}.")
        count = _check(cu, cu.cuDeviceGetCount(), "cuDeviceGetCount")
        if count == 0:
            raise BackendUnavailable("CUDA kernels need an NVIDIA GPU: the driver sees none.")
        if int(device) != device or not 0 <= device < count:
            raise ConfigError(describe("Device", "option", "device", device,
                                       f"an ordinal in [0, {count - 1}]", "Pick a present GPU"))
        self.device = int(device)
        self._dev = _check(cu, cu.cuDeviceGet(self.device), "cuDeviceGet")
        attr = cu.CUdevice_attribute
        major = _check(cu, cu.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self._dev), "cuDeviceGetAttribute")
        minor = _check(cu, cu.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self._dev), "cuDeviceGetAttribute")
        from cdiqa.kernels import ptx

        self.arch = ptx.arch_from_capability(major, minor)
        self.driver_version = int(_check(cu, cu.cuDriverGetVersion(), "cuDriverGetVersion"))
        self._ctx = _check(cu, cu.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        try:
            with self._active():
                self._load(compiler, cache, defines)
        except BaseException:
            self.close()
            raise

    # -- module loading --------------------------------------------------------------------

    def _load(self, compiler: str, cache: bool, defines) -> None:
        from cdiqa.kernels import ptx

        cu = self._cu
        tried: list[str] = []
        last_error: CdiqaError | None = None
        order = [compiler] if compiler != "auto" else \
            [ptx.choose_compiler("auto", self.driver_version)]
        if compiler == "auto":  # fall back to the other compiler if the first cannot load
            order += [c for c in ("nvcc", "nvrtc") if c not in order]
        for which in order:
            try:
                build = ptx.ptx_from_cuda(self.arch, compiler=which, cubin=True, cache=cache,
                                          defines=defines, driver_version=self.driver_version)
            except CdiqaError as exc:  # no such compiler, or it failed: try the next one
                tried.append(f"{which}: {str(exc).splitlines()[0]}")
                last_error = exc
                continue
            images = ([("cubin", build.cubin)] if build.cubin else []) + \
                [("ptx", build.ptx.encode() + b"\0")]
            for kind, image in images:
                err, module = cu.cuModuleLoadData(image)
                if int(err) == 0:
                    self._module, self.build, self.image_kind = module, build, kind
                    self._functions = {
                        name: _check(cu, cu.cuModuleGetFunction(module, name.encode()),
                                     f"cuModuleGetFunction({name})")
                        for name in (*ENTRY_POINTS.values(), REDUCE_ENTRY)}
                    return
                tried.append(f"{build.compiler} {kind}: {_error_name(cu, err)}")
        if last_error is not None and not isinstance(last_error, BackendUnavailable) and \
                len(tried) == 1:
            raise last_error  # the one compiler failed: its message has the compiler output
        raise BackendUnavailable(
            f"The masking kernel could not be loaded on {self.arch} (driver "
            f"{self.driver_version}): {'; '.join(tried)}. A PTX newer than the driver needs "
            "compiler='nvrtc' with the target's own NVRTC (see cdiqa.kernels.ptx).")

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Make the primary context current for the calls inside, then restore."""
        cu = self._cu
        current = _check(cu, cu.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if current is not None and int(current) == int(self._ctx):
            yield
            return
        _check(cu, cu.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")
        try:
            yield
        finally:
            _check(cu, cu.cuCtxPopCurrent(), "cuCtxPopCurrent")

    def close(self) -> None:
        """Unload the module and release the primary context (idempotent)."""
        cu = self._cu
        if self._module is not None:
            with contextlib.suppress(Exception), self._active():
                cu.cuModuleUnload(self._module)
            self._module = None
        if self._ctx is not None:
            with contextlib.suppress(Exception):
                cu.cuDevicePrimaryCtxRelease(self._dev)
            self._ctx = None

    def __enter__(self) -> "MaskingKernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- launching -------------------------------------------------------------------------

    def launch(self, e: Any, a: Any, gamma: Any, sigma: Any, stats: Any, workspace: Any,
               B: int, C: int, H: int, W: int, k: int, *, dtype: Dtype = "float32",
               stream: Any = 0) -> None:
        """Enqueue both passes on ``stream``; returns without waiting.

        Args:
            e, a: device pointers to (B, C, H, W) maps of ``dtype``, contiguous.
            gamma, sigma: device pointers to (C,) float32.
            stats: device pointer to the (B, 2, C) float32 output.
            workspace: device pointer to :func:`workspace_size` bytes (``None``/0 if that is 0).
            B, C, H, W, k: sizes and the odd window.
            dtype: ``"float32"`` or ``"float16"`` (of e and a).
            stream: a CUstream handle (int), or an object with ``cuda_stream``/``ptr``.

        A pointer may also be a tensor: ``data_ptr()`` or ``__cuda_array_interface__`` is
        read. Nothing checks a tensor's dtype or size against the arguments.
        """
        self.bind(e, a, gamma, sigma, stats, workspace, B, C, H, W, k, dtype=dtype,
                  stream=stream)()

    def bind(self, e: Any, a: Any, gamma: Any, sigma: Any, stats: Any, workspace: Any,
             B: int, C: int, H: int, W: int, k: int, *, dtype: Dtype = "float32",
             stream: Any = 0, tiles_per_block: int | None = None) -> Callable[[], None]:
        """Check and pack the arguments of :meth:`launch` once; the callable enqueues.

        For benchmarks and loops that launch on the same buffers many times: the call does
        two ``cuLaunchKernel`` (one when a block covers a plane) and nothing else.
        ``tiles_per_block`` overrides the default split (tuning only; the workspace must
        then hold ``workspace_size(B, C, H, W, tiles_per_block)`` bytes).
        """
        if self._module is None:
            raise KernelError("MaskingKernel is closed: got a launch after close(), expected an "
                             "open kernel. Create a new MaskingKernel.")
        check_launch(B, C, H, W, k, dtype)
        cu = self._cu
        tpb = _tpb(B, C, H, W, tiles_per_block)
        two_pass = segments_per_plane(B, C, H, W, tpb) > 1
        ws = _address(workspace, "workspace")
        if two_pass and ws == 0:
            raise ConfigError(describe("Workspace", "argument", "workspace", "NULL",
                                       f"{workspace_size(B, C, H, W, tpb)} bytes",
                                       "Allocate workspace_size(B, C, H, W) bytes"))
        ptrs = [_address(p, n) for p, n in ((e, "e"), (a, "a"), (gamma, "gamma"),
                                            (sigma, "sigma"), (stats, "stats"))]
        if any(p == 0 for p in ptrs):
            raise ConfigError("Pointer for arguments 'e, a, gamma, sigma, stats': got NULL, "
                              "expected device addresses. Pass allocated tensors.")
        e_p, a_p, g_p, s_p, st_p = ptrs
        gx, gy, gz = stats_grid(B, C, H, W, tpb)
        hstream = cu.CUstream(_stream_handle(stream))
        vp, ci = ctypes.c_void_p, ctypes.c_int
        # argument order = the kernels' parameter lists (spec.yaml kernel_params)
        first = _Params([(vp, e_p), (vp, a_p), (vp, g_p), (vp, s_p), (vp, ws), (vp, st_p),
                         (ci, B), (ci, C), (ci, H), (ci, W), (ci, k), (ci, tpb)])
        second = _Params([(vp, ws), (vp, st_p), (ci, B), (ci, C), (ci, H), (ci, W), (ci, tpb)])
        stats_fn = self._functions[ENTRY_POINTS[dtype]]
        reduce_fn = self._functions[REDUCE_ENTRY]
        rgrid = reduce_grid(B, C)
        name = ENTRY_POINTS[dtype]

        def enqueue() -> None:
            with self._active():
                _check(cu, cu.cuLaunchKernel(stats_fn, gx, gy, gz, THREADS, 1, 1, 0, hstream,
                                             first.address, 0), f"cuLaunchKernel({name})")
                if two_pass:
                    _check(cu, cu.cuLaunchKernel(reduce_fn, rgrid, 1, 1, THREADS, 1, 1, 0,
                                                 hstream, second.address, 0),
                           f"cuLaunchKernel({REDUCE_ENTRY})")

        return enqueue

    def stats(self, e: np.ndarray, a: np.ndarray, gamma: np.ndarray, sigma: np.ndarray,
              k: int) -> np.ndarray:
        """stats (B, 2, C) float32 for host arrays: e, a float32 or float16 (same dtype).

        The output and workspace are filled with NaN before the launch, so a part the
        kernels did not write cannot pass for a result.
        """
        from cdiqa.masking import check_inputs, check_window

        e, a = np.ascontiguousarray(e), np.ascontiguousarray(a)
        if e.dtype not in (np.float32, np.float16) or a.dtype != e.dtype:
            raise ShapeError(describe("Dtype", "tensors", "e/a", f"{e.dtype}/{a.dtype}",
                                      "both float32 or both float16", "Cast the maps"))
        gamma = np.ascontiguousarray(gamma, np.float32)
        sigma = np.ascontiguousarray(sigma, np.float32)
        check_inputs(e, a, gamma, sigma)
        k = check_window(k)
        B, C, H, W = e.shape
        check_launch(B, C, H, W, k, str(e.dtype))
        out = np.empty((B, 2, C), np.float32)
        ws_bytes = workspace_size(B, C, H, W)
        cu = self._cu
        buffers: list = []
        with self._active():
            try:
                def alloc(nbytes: int) -> int:
                    ptr = _check(cu, cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})",
                                 "Free GPU memory or pass a smaller batch.")
                    buffers.append(ptr)
                    return int(ptr)

                dev = {}
                for name, host in (("e", e), ("a", a), ("gamma", gamma), ("sigma", sigma)):
                    dev[name] = alloc(host.nbytes)
                    _check(cu, cu.cuMemcpyHtoD(dev[name], host.ctypes.data, host.nbytes),
                           f"cuMemcpyHtoD({name})")
                dev["stats"] = alloc(out.nbytes)
                _check(cu, cu.cuMemsetD32(dev["stats"], NAN_BITS, out.size), "cuMemsetD32(stats)")
                dev["ws"] = 0
                if ws_bytes:
                    dev["ws"] = alloc(ws_bytes)
                    _check(cu, cu.cuMemsetD32(dev["ws"], NAN_BITS, ws_bytes // 4),
                           "cuMemsetD32(workspace)")
                _check(cu, cu.cuCtxSynchronize(), "cuCtxSynchronize")
                self.launch(dev["e"], dev["a"], dev["gamma"], dev["sigma"], dev["stats"],
                            dev["ws"], B, C, H, W, k, dtype=str(e.dtype), stream=0)
                _check(cu, cu.cuCtxSynchronize(), "cuCtxSynchronize",
                       "The kernel failed while running; run compute-sanitizer on it.")
                _check(cu, cu.cuMemcpyDtoH(out.ctypes.data, dev["stats"], out.nbytes),
                       "cuMemcpyDtoH(stats)")
            finally:
                for ptr in buffers:
                    cu.cuMemFree(ptr)
        return out


__all__ = ["ENTRY_POINTS", "MAX_PLANES", "MAX_SIDE", "MAX_TILES", "MaskingKernel", "NAN_BITS",
           "REDUCE_ENTRY", "REDUCE_PLANES", "THREADS", "TILE_H", "TILE_W", "check_launch",
           "reduce_grid", "segments_per_plane", "stats_grid", "tiles_per_block",
           "tiles_per_plane", "workspace_size"]
