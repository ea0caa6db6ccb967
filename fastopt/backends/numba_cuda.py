"""Numba-CUDA backend: the rules of fastopt/ops/<op>.py compiled with numba.cuda.jit, for GPU
support without a CUDA build of fastopt. One launch per pointer table (all its tensors,
metadata copied once; _numba_cuda.py), on the arrays' current stream; float32,
float64 and float16 storage (float32 math for float16).

Kernels are cached on disk (cache=True); `compile_times()` reports what the first call of each
kernel cost in this process, for `fastopt bench`.

Numba-CUDA compiles through NVVM to PTX, which the driver then JIT-compiles unless numba-cuda
links through the toolkit (nvJitLink). PTX from an NVVM newer than the driver is refused
(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "Unsupported .version"): the first launch then raises a
RuntimeError that names both versions and the ways out, not the driver's bare error code.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import ops
from .._arrays import cpu_view, cuda_stream
from .._table import TensorTable
from ._numba_common import kernel_table

_DTYPES = ("float32", "float64", "float16")
_MAX_BLOCKS = 65536
_NORM_BLOCKS = 1024
_compile_times: dict[str, float] = {}


def _cuda() -> Any:
    from numba import cuda

    return cuda


def _simulated() -> bool:
    return bool(_cuda().config.ENABLE_CUDASIM)


def _array_support_error() -> str | None:
    """Why numba-cuda's array support (loaded at the first kernel compile) cannot load, or None.
    numba-cuda 0.30 registers np.row_stack, which NumPy 2.5 removed: every compile would fail
    with an AttributeError deep in numba, so availability says it first."""
    import importlib

    try:
        importlib.import_module("numba.cuda.np.arrayobj")
    except ModuleNotFoundError:  # another numba-cuda layout: nothing to probe
        return None
    except Exception as exc:  # noqa: BLE001 - any failure there fails every compile
        from importlib.metadata import version

        return (f"numba-cuda {version('numba-cuda')} cannot load its array support under NumPy "
                f"{np.__version__} ({type(exc).__name__}: {exc}); an older NumPy works")
    return None


@functools.cache
def _get() -> dict[str, Any]:
    from . import _numba_cuda

    return kernel_table(_numba_cuda)


def compile_times() -> dict[str, float]:
    """Seconds the first launch of each (kernel, dtype) took in this process: Numba-CUDA
    compilation (NVVM + driver), or loading from the on-disk cache on later runs."""
    return dict(_compile_times)


_PTX_ERRORS = ("UNSUPPORTED_PTX_VERSION", "Unsupported .version", "unsupported PTX",
               "PTX JIT compil", "CUDA_ERROR_INVALID_PTX", "[222]", "[218]")


def _versions() -> tuple[str, str]:
    """(driver's CUDA version, numba-cuda's toolkit CUDA version, whose NVVM made the PTX) as
    'major.minor' strings, '?' where unknown."""
    cuda = _cuda()
    found = []
    for get in (lambda: cuda.cudadrv.driver.driver.get_version(),
                lambda: cuda.runtime.get_version()):
        try:
            major, minor = get()[:2]
            found.append(f"{major}.{minor}")
        except Exception:
            found.append("?")
    return found[0], found[1]


def explain_jit_error(exc: BaseException, kernel: str) -> RuntimeError | None:
    """A RuntimeError that says why the driver refused a kernel's PTX and what to do, for an
    exception from a first launch that is such a refusal; None for any other exception."""
    text = f"{type(exc).__name__}: {exc}"
    if not any(marker.lower() in text.lower() for marker in _PTX_ERRORS):
        return None
    driver, toolkit = _versions()
    ptx = re.search(r"\.version (\d+\.\d+)", text)
    found = f" (PTX ISA {ptx.group(1)})" if ptx else ""
    return RuntimeError(
        f"numba_cuda: the GPU driver (CUDA {driver}) cannot JIT-compile the PTX{found} that "
        f"numba-cuda's NVVM (CUDA {toolkit}) emitted for kernel {kernel}: the driver is "
        "older than the NVVM. Either upgrade the driver, or install an NVVM / CUDA toolkit "
        "no newer than the driver (e.g. the nvidia-nvvm / cuda-toolkit wheels of that CUDA "
        "version), or let numba-cuda link through the toolkit (install nvidia-nvjitlink of "
        "the NVVM's version) so the driver loads machine code, or use backend='cuda' (fastopt's "
        f"CUDA C++ kernels, compiled ahead of time). Driver error: {text}")


def _math_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.float64 if dtype == "float64" else np.float32)


class NumbaCudaBackend:
    name = "numba_cuda"
    devices = ("cuda",)
    dtypes = _DTYPES

    def __init__(self) -> None:
        self._dummies: dict[tuple[str, int], Any] = {}
        self._available: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        """Kept after the first success: backends.resolve() asks on every call."""
        if self._available is not None:
            return self._available
        try:
            cuda = _cuda()
        except ImportError as exc:
            return False, f"numba-cuda is not installed ({exc})"
        if _simulated():
            return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        try:
            if not cuda.is_available():
                return False, "numba.cuda finds no usable GPU/driver"
            name = cuda.get_current_device().name
        except Exception as exc:  # driver errors surface here on GPU-less machines
            return False, f"numba.cuda: {exc}"
        if isinstance(name, bytes):
            name = name.decode()
        why = _array_support_error()
        if why is not None:
            return False, why
        self._available = (True, f"Numba-CUDA on {name}")
        return self._available

    # --- arrays and launches -------------------------------------------------------------
    def _array(self, ptr: int, n: int, dtype: str) -> Any:
        """A flat device array over validated memory (the loss kernels take arrays)."""
        if _simulated():  # simulated "device" memory is host memory
            return cpu_view(ptr, n, dtype)
        desc = {"shape": (n,), "typestr": np.dtype(dtype).str, "data": (ptr, False),
                "version": 3, "strides": None, "stream": None}
        return _cuda().from_cuda_array_interface(desc, owner=None, sync=False)

    def _dummy(self, dtype: str, device: int) -> Any:
        key = (dtype, device)
        if key not in self._dummies:
            z = np.zeros(1, dtype=dtype)
            self._dummies[key] = z if _simulated() else _cuda().to_device(z)
        return self._dummies[key]

    @staticmethod
    def _device_consts(arr: np.ndarray) -> tuple:
        # a tuple of NumPy scalars travels by value in the kernel arguments, in the math dtype:
        # no host-to-device copy per step
        return tuple(arr)

    def _stream(self, t: TensorTable) -> Any:
        cuda = _cuda()
        if _simulated():
            return 0
        handle = t.stream()
        return cuda.external_stream(handle) if handle else cuda.default_stream()

    @staticmethod
    @contextlib.contextmanager
    def _on_device(t: TensorTable) -> Iterator[None]:
        """The table's device is current inside (arrays and launches go to that context)."""
        if _simulated():
            yield
            return
        with _cuda().gpus[t.device[1]]:
            yield

    @staticmethod
    def _call(fn: Any, name: str, dtype: str, blocks: int, stream: Any, args: tuple) -> None:
        """One launch; the first of each (kernel, dtype) compiles or loads it (timed), and a
        driver that refuses its PTX is explained."""
        key = f"{name}[{dtype}]"
        if key in _compile_times:
            fn[blocks, 256, stream](*args)
            return
        t0 = time.perf_counter()
        try:
            fn[blocks, 256, stream](*args)
        except Exception as exc:
            explained = explain_jit_error(exc, key)
            if explained is not None:
                raise explained from exc
            raise
        _compile_times[key] = time.perf_counter() - t0

    def _metadata(self, t: TensorTable, cap: int, stream: Any) -> tuple[Any, Any, Any, int]:
        """(ptrs, first, numel, grid) of one launch over the table (see _numba_cuda):
        tensor t gets min(ceil(numel / 256), cap) blocks. One host-to-device copy of int64s."""
        n = len(t)
        blocks = np.minimum((t.numel + 255) // 256, cap)
        meta = np.empty(t.ptrs.size + 2 * n + 1, np.int64)
        meta[:t.ptrs.size] = t.ptrs.reshape(-1).view(np.int64)
        first = meta[t.ptrs.size:t.ptrs.size + n + 1]
        first[0] = 0
        np.cumsum(blocks, out=first[1:])
        meta[t.ptrs.size + n + 1:] = t.numel
        grid = int(first[-1])
        if not _simulated():
            meta = _cuda().to_device(meta, stream=stream)
        a, b = t.ptrs.size, t.ptrs.size + n + 1
        return meta[:a], meta[a:b], meta[b:], grid

    def _launch(self, name: str, t: TensorTable, consts: tuple) -> None:
        if t.dtype not in _DTYPES:
            raise TypeError(f"numba_cuda: {t.dtype} storage is not supported (float32, float64 "
                            "and float16); the cuda backend takes bfloat16")
        with self._on_device(t):
            stream = self._stream(t)
            ptrs, first, numel, grid = self._metadata(t, _MAX_BLOCKS, stream)
            if grid == 0:
                return
            consts = tuple(self._device_consts(c) for c in consts)
            self._call(_get()[name], name, t.dtype, grid, stream,
                       (ptrs, first, numel, self._dummy(t.dtype, t.device[1]), *consts))

    def step(self, op: str, t: TensorTable, scalars: ops.Scalars) -> None:
        math = np.float64 if ops.get(op).math == "float64" else _math_dtype(t.dtype)
        self._launch(op, t, (scalars.vector.astype(math),))

    def scale(self, t: TensorTable, coef: float) -> None:
        c = np.array([-math.inf, math.inf, coef], dtype=_math_dtype(t.dtype))
        self._launch("clamp", t, (c,))

    def clamp(self, t: TensorTable, clip_value: float) -> None:
        c = np.array([-clip_value, clip_value, 1.0], dtype=_math_dtype(t.dtype))
        self._launch("clamp", t, (c,))

    def norm_sum(self, t: TensorTable, norm_type: float) -> float:
        from .numba import _fold

        if t.dtype not in _DTYPES:
            raise TypeError(f"numba_cuda: {t.dtype} storage is not supported")
        kind = {2.0: 0, 1.0: 1, float("inf"): 2}.get(float(norm_type), 3)
        fn = _get()["norm_partials"]
        cuda = _cuda()
        # the partials are allocated and the kernel runs in the table's device context, as in
        # _launch (the current device need not be the arrays')
        with self._on_device(t):
            stream = self._stream(t)
            ptrs, first, numel, grid = self._metadata(t, _NORM_BLOCKS, stream)
            if grid == 0:
                return 0.0
            out = np.zeros(grid) if _simulated() else cuda.device_array(grid, np.float64,
                                                                        stream=stream)
            self._call(fn, "norm_partials", t.dtype, grid, stream,
                       (ptrs, first, numel, self._dummy(t.dtype, t.device[1]), kind,
                        float(norm_type), out))
            if not _simulated():
                out = out.copy_to_host(stream=stream)
                stream.synchronize()
        return _fold(kind, out)

    # --- losses (fastopt/_numba_cuda_losses.py): arrays arrive as validated ArraySpecs ------
    def _loss_context(self, spec: Any) -> tuple[Any, Any]:
        """(device context, stream) of a loss call: the array's device and current stream."""
        if _simulated():
            return contextlib.nullcontext(), 0
        cuda = _cuda()
        handle = cuda_stream(spec.obj, spec.device[1])
        return (cuda.gpus[spec.device[1]],
                cuda.external_stream(handle) if handle else cuda.default_stream())

    def _loss_array(self, spec: Any, dtype: str) -> Any:
        """The spec's memory as a flat device array, or the dtype's dummy for None."""
        if spec is None:
            return self._dummy(dtype, 0 if _simulated() else _cuda().get_current_device().id)
        return self._array(spec.ptr, spec.numel, spec.dtype)

    def _to_host(self, arr: Any, stream: Any) -> np.ndarray:
        if _simulated():
            return np.array(arr, copy=True)
        out = arr.copy_to_host(stream=stream)
        stream.synchronize()
        return out

    def _out_array(self, n: int, stream: Any) -> Any:
        return np.zeros(n) if _simulated() else _cuda().device_array(n, np.float64,
                                                                      stream=stream)

    def cross_entropy(self, logits: Any, target: Any, weight: Any, grad: Any, *, n: int, c: int,
                      ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                      reduction: str, inner: int = 1) -> Any:
        """One block per row; the class indices and weights are read on the host first (to
        raise for an out-of-range index before any gradient is written and to find 'mean''s
        denominator), the row losses come back and are added there."""
        from .. import _numba_cuda_losses as K
        from .. import _numba_losses as L
        from ._losses import cross_entropy_result

        dt = logits.dtype
        ctx, stream = self._loss_context(logits)
        with ctx:
            probs = target.dtype not in ("int32", "int64")
            t_arr = self._loss_array(target, dt)
            w_arr = self._loss_array(weight, dt)
            t_host = np.zeros(0, dt) if probs else self._to_host(t_arr, stream)
            w_host = None if weight is None else self._to_host(w_arr, stream)
            bad, denom, scale, wsum, probs = L.ce_prepare(t_host, w_host, n, c, ignore_index,
                                                          reduction)
            rows = np.zeros(n)
            if bad < 0 and n:
                x = self._loss_array(logits, dt)
                g = x if grad is not None and grad.ptr == logits.ptr else \
                    self._loss_array(grad, dt)
                out = self._out_array(n, stream)
                args = (x, self._loss_array(None, "int64") if probs else t_arr, probs,
                        t_arr if probs else self._loss_array(None, dt), w_arr,
                        weight is not None, wsum, g, grad is not None, n, c, inner,
                        ignore_index, label_smoothing, z_loss, softcap, scale, out)
                self._call_losses(K.cross_entropy, "cross_entropy", dt, min(n, 4096), stream,
                                  args)
                rows = self._to_host(out, stream)
        return cross_entropy_result(bad, target, c, ignore_index, reduction, rows,
                                    float(np.sum(rows)), denom, t_host)

    def elementwise_loss(self, kind: str, input: Any, target: Any, weight: Any,
                         weight_period: int, pos_weight: Any, pos_weight_period: int, grad: Any,
                         out: Any, *, param: float, grad_scale: float) -> float:
        """Grid-stride over the elements, one float64 partial sum per block (at most
        1024 blocks), added exactly on the host."""
        from .. import _numba_cuda_losses as K
        from .. import _numba_losses as L

        dt, n = input.dtype, input.numel
        if n == 0:
            return 0.0
        ctx, stream = self._loss_context(input)
        with ctx:
            blocks = min(-(-n // K.BLOCK), _NORM_BLOCKS)
            partials = self._out_array(blocks, stream)
            args = (self._loss_array(input, dt), L.KINDS[kind], self._loss_array(target, dt),
                    self._loss_array(weight, dt), weight_period if weight is not None else 0,
                    self._loss_array(pos_weight, dt),
                    pos_weight_period if pos_weight is not None else 0,
                    self._loss_array(grad, dt), grad is not None, self._loss_array(out, dt),
                    out is not None, float(param), float(grad_scale), partials)
            self._call_losses(K.elementwise, "elementwise_loss", dt, blocks, stream, args)
            return math.fsum(self._to_host(partials, stream))

    def _call_losses(self, fn: Any, name: str, dtype: str, blocks: int, stream: Any,
                     args: tuple) -> None:
        if dtype not in ("float32", "float64"):
            raise TypeError(f"numba_cuda: losses take float32 or float64, not {dtype}")
        self._call(fn, name, dtype, blocks, stream, args)


BACKEND = NumbaCudaBackend()
