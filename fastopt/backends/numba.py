"""Numba CPU backend: the rules of fastopt/ops/<op>.py compiled with @njit(parallel=True,
cache=True) into one driver template; one launch per pointer table, its tensors split into
fixed 16K-element chunks spread over the threads as csrc/cpu does (_numba_cpu.py).

Compiled kernels are cached on disk (Numba's cache, next to this file or in
NUMBA_CACHE_DIR); `compile_times()` reports what the first call of each kernel cost in this
process (compilation or cache load), for `fastopt bench`.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np

from .. import ops
from .._arrays import cpu_view
from .._table import TensorTable
from ._numba_common import kernel_table

# as csrc/cpu: partial sums per fixed chunk, so any thread count gives the same bits
_CHUNK = 1 << 14
_compile_times: dict[str, float] = {}
_error = ""


@functools.cache
def _get() -> dict[str, Any]:
    from . import _numba_cpu

    return kernel_table(_numba_cpu)


def _timed(name: str, fn: Any, *args: Any) -> Any:
    key = f"{name}[{args[3].dtype.name}]"
    if key in _compile_times:
        return fn(*args)
    t0 = time.perf_counter()
    out = fn(*args)
    _compile_times[key] = time.perf_counter() - t0
    return out


def compile_times() -> dict[str, float]:
    """Seconds the first call of each (kernel, argument types) took in this process: Numba
    compilation, or loading from its on-disk cache (cache=True) on later runs."""
    return dict(_compile_times)


def _fold(kind: int, x: np.ndarray) -> float:
    x = x.copy()
    n = x.size
    if n == 0:
        return 0.0
    width = 1
    while width < n:
        a = x[0:n - width:2 * width]
        b = x[width:n:2 * width]
        k = min(a.size, b.size)
        if kind == 2:
            x[0:2 * width * k:2 * width] = np.where(np.isnan(a[:k]) | (a[:k] > b[:k]), a[:k],
                                                    b[:k])
        else:
            x[0:2 * width * k:2 * width] = a[:k] + b[:k]
        width *= 2
    return float(x[0])


def _chunk_starts(numel: np.ndarray) -> np.ndarray:
    """first[t] = index of tensor t's first _CHUNK-element chunk; first[-1] = the total."""
    first = np.zeros(len(numel) + 1, np.int64)
    np.cumsum((numel + (_CHUNK - 1)) // _CHUNK, out=first[1:])
    return first


def _math_dtype(storage: str) -> type:
    """float32 math for float32 and 16-bit storage, float64 for float64 (as csrc: math_t)."""
    return np.float64 if storage == "float64" else np.float32


_DUMMY: dict[str, np.ndarray] = {}


def _dummy(dtype: str) -> np.ndarray:
    if dtype not in _DUMMY:
        _DUMMY[dtype] = np.zeros(1, dtype=dtype)
    return _DUMMY[dtype]


class NumbaBackend:
    name = "numba"
    devices = ("cpu",)
    dtypes = ("float32", "float64")  # Numba's CPU target has no float16/bfloat16 arithmetic

    def available(self) -> tuple[bool, str]:
        try:
            import numba
        except ImportError as exc:
            return False, f"numba is not installed ({exc})"
        return True, f"Numba {numba.__version__} @njit(parallel), {numba.get_num_threads()} threads"

    def _run(self, name: str, t: TensorTable, *consts: Any, out: np.ndarray | None = None) -> None:
        """One launch of kernel `name` over the whole table (see _numba_cpu)."""
        first = _chunk_starts(t.numel)
        if first[-1] == 0:
            return
        args = (t.ptrs, first, t.numel, _dummy(t.dtype), *consts)
        _timed(name, _get()[name], *args, *(() if out is None else (out,)))

    def step(self, op: str, t: TensorTable, scalars: ops.Scalars) -> None:
        spec = ops.get(op)
        math = np.float64 if spec.math == "float64" else _math_dtype(t.dtype)
        self._run(op, t, scalars.vector.astype(math))

    def norm_sum(self, t: TensorTable, norm_type: float) -> float:
        kind = {2.0: 0, 1.0: 1, float("inf"): 2}.get(float(norm_type), 3)
        out = np.empty(int(_chunk_starts(t.numel)[-1]), dtype=np.float64)
        self._run("norm_partials", t, kind, float(norm_type), out=out)
        return _fold(kind, out)

    def scale(self, t: TensorTable, coef: float) -> None:
        self._run("scale", t, np.dtype(t.dtype).type(coef))

    def clamp(self, t: TensorTable, clip_value: float) -> None:
        m = np.dtype(t.dtype).type(clip_value)
        self._run("clamp", t, -m, m)

    # --- losses (fastopt/_numba_losses.py): arrays arrive as validated ArraySpecs ------------
    def cross_entropy(self, logits: Any, target: Any, weight: Any, grad: Any, *, n: int, c: int,
                      ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                      reduction: str, inner: int = 1) -> Any:
        from .. import _numba_losses as L
        from ._losses import cross_entropy_result

        x = cpu_view(logits.ptr, logits.numel, logits.dtype)
        t = cpu_view(target.ptr, target.numel, target.dtype)
        w = None if weight is None else cpu_view(weight.ptr, weight.numel, weight.dtype)
        bad, denom, scale, wsum, probs = L.ce_prepare(t, w, n, c, ignore_index, reduction)
        rows = np.zeros(n, dtype=np.float64)
        if bad < 0 and n:
            g = x if grad is not None and grad.ptr == logits.ptr else (
                cpu_view(grad.ptr, grad.numel, grad.dtype) if grad is not None else
                _dummy(logits.dtype))
            _timed("cross_entropy", L.cross_entropy, x,
                   _dummy("int64") if probs else t, probs, t if probs else _dummy(logits.dtype),
                   _dummy(logits.dtype) if w is None else w, w is not None, wsum, g,
                   grad is not None, n, c, inner, ignore_index, label_smoothing, z_loss,
                   softcap, scale, rows)
        return cross_entropy_result(bad, target, c, ignore_index, reduction, rows,
                                    float(np.sum(rows)), denom)

    def elementwise_loss(self, kind: str, input: Any, target: Any, weight: Any,
                         weight_period: int, pos_weight: Any, pos_weight_period: int, grad: Any,
                         out: Any, *, param: float, grad_scale: float) -> float:
        from .. import _numba_losses as L

        def view(spec: Any) -> np.ndarray:
            return _dummy(input.dtype) if spec is None else cpu_view(spec.ptr, spec.numel,
                                                                     spec.dtype)

        n = input.numel
        partials = np.empty(-(-n // L.CHUNK), dtype=np.float64)
        if n:
            _timed("elementwise_loss", L.elementwise, view(input), L.KINDS[kind], view(target),
                   view(weight), weight_period if weight is not None else 0, view(pos_weight),
                   pos_weight_period if pos_weight is not None else 0, view(grad),
                   grad is not None, _dummy(input.dtype) if out is None else out.reshape(-1),
                   out is not None, float(param), float(grad_scale), partials)
        return math.fsum(partials)


BACKEND = NumbaBackend()
