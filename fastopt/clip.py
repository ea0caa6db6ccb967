"""Gradient clipping over lists of arrays, fused and deterministic.

The norm is one multi-tensor reduction (fixed-order: the same bits for any thread count),
the scaling one multi-tensor kernel; results follow torch.nn.utils.clip_grad_norm_ and
clip_grad_value_. `GradNormClipper` is clip_grad_norm_ kept on the device (CUDA-graph
capturable). The tables of recent grad lists are kept, and re-validated every call
(_KeptTables), so clipping the same many small tensors again costs about one kernel.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import backends
from ._arrays import cpu_view, describe, empty_like
from ._table import TableCache, TensorTable, _as_list, build_tables


def _grad_list(grads: Any) -> Sequence[Any]:
    """The grads argument as a sequence, or a TypeError naming it."""
    lst = _as_list("grads", grads)
    if lst is None:
        raise TypeError("grads: expected a list of arrays, got None")
    return lst


def _tables(grads: Sequence[Any]):
    return build_tables(("grad",), {"grad": grads}, written={"grad"})


class _KeptTables:
    """Validated tables of recent grad lists, so that clipping the same tensors again costs
    C-speed re-reads, not Python work per tensor (fastopt._table's invariant holds: nothing
    reaches a kernel that was not re-validated in this call).

    One TableCache per list length (the few most recently used; a list of another length
    evicts the oldest). Its only row is "grad", the row a TableCache never keeps: every call
    re-reads and validates every grad in full (dtype, shape, layout, device, writability and
    aliasing, at C speed for NumPy and torch) against the grouping of the cached tables, and
    the tables hold no reference to any array, so a kept entry neither pins memory nor can
    name freed memory. A grad that no longer fits (another dtype or shape, another array
    type) rebuilds the tables from scratch, whose full validation reports what is wrong.

    A cache is taken out while a call uses it, so concurrent calls never share pointers."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._caches: OrderedDict[int, TableCache] = OrderedDict()

    @contextmanager
    def tables(self, grads: Sequence[Any]) -> Iterator[list[TensorTable]]:
        n = len(grads)
        with self._lock:
            cache = self._caches.pop(n, None)
        tables = None
        if cache is not None:
            try:
                tables = cache.tables({"grad": grads})
            except Exception:  # noqa: BLE001 - rebuilt below, which raises the clear error
                tables = None
        if tables is None:
            cache = _GradTables()
            tables = cache.tables({"grad": grads})
        try:
            yield tables
        finally:
            with self._lock:
                self._caches[n] = cache
                self._caches.move_to_end(n)
                while len(self._caches) > self.size:
                    self._caches.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._caches.clear()


class _GradTables(TableCache):
    """The TableCache of one grad list: "grad" is its only row, validated in full every call.

    Clipping walks each grad as (pointer, element count): for C-contiguous torch tensors the
    dtype, byte size and contiguity the per-call re-read checks fix both, so the shapes need
    not be compared (torch.Size per tensor: the dearest re-read). Any other layout keeps the
    shape check, since equal strides and byte size with another shape need not be dense."""

    def __init__(self) -> None:
        super().__init__(("grad",), {"grad"}, keep="grad")

    def _build(self, lists: Any) -> list[TensorTable]:
        tables = super()._build(lists)
        dense = all(callable(getattr(g, "is_contiguous", None)) and g.is_contiguous()
                    for g in lists["grad"])
        for t in tables:
            t.trusted_shapes = dense
        return tables


_kept = _KeptTables()


def _check_norm_args(max_norm: float, norm_type: float) -> float:
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"Invalid norm_type: {norm_type} (must be > 0 or inf)")
    if math.isnan(max_norm):
        raise ValueError("max_norm is NaN")
    return norm_type


def _host_norm(tables: list, norm_type: float, backend: str | None) -> float:
    parts = [backends.resolve(backend, t.device[0], t.dtype).norm_sum(t, norm_type)
             for t in tables]
    if math.isinf(norm_type):
        total = max(parts, key=lambda x: (not math.isnan(x), x)) if len(parts) > 1 else parts[0]
        if any(math.isnan(x) for x in parts):
            total = math.nan
        return total
    return math.fsum(parts) ** (1.0 / norm_type)


def _coefficient(max_norm: float, total: float) -> float:
    return min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan


def clip_grad_norm_(grads: Sequence[Any], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, *, backend: str | None = None) -> float:
    """Scale grads in place so their joint norm is at most max_norm; return the norm before.

        norm = (sum over all elements |g|^p)^(1/p)        (max |g| for p = inf)
        g = g * min(max_norm / (norm + 1e-6), 1)

    An empty list returns 0.0. With error_if_nonfinite, a NaN or infinite norm raises
    RuntimeError and leaves the grads unchanged (as torch). The norm comes back to the host
    (a synchronization on CUDA arrays); GradNormClipper keeps it on the device. Repeated
    calls on the same grads reuse their validated tables (re-validated every call).
    """
    norm_type = _check_norm_args(max_norm, norm_type)
    grads = _grad_list(grads)
    if len(grads) == 0:
        return 0.0
    with _kept.tables(grads) as tables:
        total = _host_norm(tables, norm_type, backend)
        if error_if_nonfinite and not math.isfinite(total):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients is "
                               "non-finite, so it cannot be clipped. To disable this error "
                               "and scale the gradients by the non-finite norm anyway, set "
                               "error_if_nonfinite=False")
        coef = _coefficient(max_norm, total)
        for t in tables:
            backends.resolve(backend, t.device[0], t.dtype).scale(t, coef)
    return total


def grad_norm(grads: Sequence[Any], norm_type: float = 2.0, *,
              backend: str | None = None) -> float:
    """The joint norm of grads, (sum over all elements |g|^p)^(1/p) (max |g| for p = inf), as
    clip_grad_norm_ computes it, without scaling anything; 0.0 for an empty list."""
    norm_type = _check_norm_args(1.0, norm_type)
    grads = _grad_list(grads)
    if len(grads) == 0:
        return 0.0
    with _kept.tables(grads) as tables:
        return _host_norm(tables, norm_type, backend)


def table_norm(tables: Sequence[TensorTable], norm_type: float,
               backend: str | None = None) -> float:
    """The joint norm of the "grad" rows of validated optimizer tables (the fused clipping of
    the optimizers' max_grad_norm)."""
    if not tables:
        return 0.0
    return _host_norm([t.only("grad") for t in tables], float(norm_type), backend)


class GradNormClipper:
    """clip_grad_norm_ that keeps the norm on the device: capturable in a CUDA graph.

    The formula of clip_grad_norm_:

        norm = (sum over all elements |g|^p)^(1/p)        (max |g| for p = inf)
        g = g * min(max_norm / (norm + 1e-6), 1)

    but on CUDA arrays a call is three kinds of launch on the grads' stream: the partial sums
    per 64K-element chunk, a one-block fold in a fixed order that writes the norm and the
    coefficient into a float64 workspace, and the scaling, which reads the coefficient from
    there. Nothing is copied to the host, nothing waits for the device, and nothing is
    allocated after the first call (the workspace is allocated like the grads then, and again
    only if later grads need more partials), so a call can be captured in a CUDA graph
    (torch.cuda.graph) and replayed, as torch's clip_grad_norm_ can. The norm has the same bits
    as clip_grad_norm_'s for grads of one dtype.

    Returns the norm as a one-element float64 array of the grads' framework and device (a view
    of the workspace, which the next call overwrites); an empty list returns 0.0. There is no
    error_if_nonfinite, which needs the norm on the host: test the returned norm when that
    costs nothing. CPU arrays are clipped on the host with the same result, so one training
    loop serves both devices; CUDA arrays need the `cuda` backend.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0, *,
                 backend: str | None = None) -> None:
        self.norm_type = _check_norm_args(max_norm, norm_type)
        self.max_norm = float(max_norm)
        self.backend = backend
        self._work: Any = None
        self._work_key: tuple | None = None  # (device, framework) of the workspace

    def _workspace(self, like: Any, device: tuple[str, int], size: int) -> Any:
        key = (device, type(like).__module__.split(".")[0])
        if self._work is None or self._work_key != key or self._work.shape[0] < size:
            self._work = empty_like(like, (size,), dtype="float64")
            self._work_key = key
        return self._work

    def __call__(self, grads: Sequence[Any]) -> Any:
        grads = _grad_list(grads)
        if len(grads) == 0:
            return 0.0
        tables = _tables(grads)
        devices = {t.device for t in tables}
        if len(devices) > 1:
            raise ValueError("grads: on several devices "
                             f"({', '.join(f'{d}:{i}' for d, i in sorted(devices))}); "
                             "GradNormClipper keeps one norm on one device")
        device = tables[0].device
        b = backends.resolve(self.backend, device[0])
        if device[0] == "cpu":
            work = self._workspace(tables[0].specs["grad"][0].obj, device, 2)
            total = _host_norm(tables, self.norm_type, self.backend)
            coef = _coefficient(self.max_norm, total)
            cpu_view(describe(work).ptr, 2, "float64")[:] = (total, coef)
            for t in tables:
                backends.resolve(self.backend, t.device[0], t.dtype).scale(t, coef)
            return work[0:1]
        if not hasattr(b, "clip_grad_norm_device"):
            raise backends.BackendUnavailable(
                f"backend {b.name!r} cannot keep the norm on the device; GradNormClipper on "
                f"CUDA arrays needs the cuda backend ({backends.get('cuda').available()[1]})")
        size = 2 + sum(b.norm_blocks(t) for t in tables)
        work = self._workspace(tables[0].specs["grad"][0].obj, device, size)
        b.clip_grad_norm_device(tables, self.norm_type, self.max_norm, describe(work).ptr,
                                int(work.shape[0]))
        return work[0:1]


def clip_grad_value_(grads: Sequence[Any], clip_value: float, *,
                     backend: str | None = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    if not clip_value >= 0:
        raise ValueError(f"Invalid clip_value: {clip_value} (must be >= 0)")
    grads = _grad_list(grads)
    if len(grads) == 0:
        return
    with _kept.tables(grads) as tables:
        for t in tables:
            backends.resolve(backend, t.device[0], t.dtype).clamp(t, float(clip_value))


__all__ = ["GradNormClipper", "clip_grad_norm_", "clip_grad_value_", "grad_norm"]
