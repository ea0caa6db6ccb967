"""The compiled CUDA C++ kernels (fastopt._C.cuda): multi-tensor-apply launches on the arrays'
device and current stream, fp32 math for float16/bfloat16 storage.

Optimizer steps take their scalars (learning rate, bias corrections, ...) from the host, in the
op's float64 scalar vector (fastopt.ops). `clip_grad_norm_device` is the capturable gradient
clipping (fastopt.clip.GradNormClipper): it never leaves the device.

Every launcher checks its pointer table before launching (csrc/include/fastopt/table_check.h):
a null pointer where a slot is needed, a pointer misaligned for its dtype or a negative size
raises ValueError naming the slot and the tensor, instead of faulting on the device.
"""

from __future__ import annotations

import math
from typing import Any

from .._arrays import cuda_stream
from .._table import TensorTable
from ..ops import Scalars
from ._losses import cross_entropy_result

_NORM_KIND = {2.0: 0, 1.0: 1, math.inf: 2}


def _module() -> tuple[Any, str]:
    try:
        from .. import _C
    except ImportError as exc:
        return None, f"fastopt._C is not built ({exc})"
    if not getattr(_C, "cuda_compiled", False):
        return None, ("fastopt was built without CUDA (no nvcc at build time, or "
                      "FASTOPT_CUDA=OFF)")
    return _C.cuda, ""


class CudaBackend:
    name = "cuda"
    devices = ("cuda",)
    #: runs only the optimizers compiled into the extension, none made by from_rule
    builtin_only = True

    def __init__(self) -> None:
        self._cu, self._error = _module()
        self._count: int | None = None
        self._available: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        """(True, description) once a device was found; backends.resolve() asks on every
        call, so the answer is kept: the device-properties query behind it costs milliseconds."""
        if self._available is not None:
            return self._available
        if self._cu is None:
            return False, self._error
        if self._count is None:
            # the first query loads the driver; without one it reports why, and never raises
            count, why = self._cu.device_count()
            self._count, self._why = count, why
        if self._count <= 0:
            return False, f"CUDA kernels compiled, but no usable GPU: {self._why}"
        runtime = self._cu.runtime_version()
        names = ", ".join(f"{i}: {self._cu.device_name(i)}" for i in range(self._count))
        large = ", ".join(str(i) for i in range(self._count) if self._cu.large_params(i))
        self._available = (True, f"CUDA C++ (runtime {runtime // 1000}.{runtime % 1000 // 10});"
                                 f" {names}; 32 KiB kernel parameters on devices [{large}]")
        return self._available

    @staticmethod
    def _where(t: TensorTable) -> tuple[int, int]:
        """(device index, stream) of a table (TensorTable.stream)."""
        return t.device[1], t.stream()

    #: step() unscales the grads in its own pass (functional.run)
    fused_unscale = True

    def step(self, op: str, t: TensorTable, scalars: Scalars, unscale: float = 1.0) -> None:
        """One step of optimizer `op` over table t on its device and stream, without
        synchronizing; scalars: the op's float64 scalar vector (fastopt.ops), in host memory;
        unscale != 1: the grads are unscaled in place in the same pass."""
        dev, stream = self._where(t)
        self._cu.step(op, t.ptrs, t.numel, t.dtype_code, dev, stream, scalars.vector, unscale)

    def norm_sum(self, t: TensorTable, norm_type: float) -> float:
        dev, stream = self._where(t)
        kind = _NORM_KIND.get(float(norm_type), 3)
        return self._cu.norm_sum(t.ptrs, t.numel, t.dtype_code, dev, stream, kind,
                                 float(norm_type))

    def norm_blocks(self, t: TensorTable) -> int:
        """Partials `clip_grad_norm_device` writes for table t (one per 64K-element chunk)."""
        return int(self._cu.norm_blocks(t.numel))

    def clip_grad_norm_device(self, tables: list[TensorTable], norm_type: float,
                              max_norm: float, work_ptr: int, work_len: int) -> None:
        """clip_grad_norm_ without leaving the device, for tables on one device: the partial
        sums of every table into work[2:], one fixed-order fold to work[0] = norm and
        work[1] = min(max_norm / (norm + 1e-6), 1), then every table scaled by work[1]; all on
        the first table's stream, with no host synchronization and no allocation, so the
        sequence can be captured in a CUDA graph. work: float64[work_len] device memory."""
        dev, stream = self._where(tables[0])
        kind = _NORM_KIND.get(float(norm_type), 3)
        filled = 0
        for t in tables:
            self._cu.norm_partials(t.ptrs, t.numel, t.dtype_code, dev, stream, kind,
                                   float(norm_type), work_ptr + 8 * (2 + filled),
                                   work_len - 2 - filled)
            filled += self.norm_blocks(t)
        self._cu.norm_finish(work_ptr + 16, filled, kind, float(norm_type), float(max_norm),
                             work_ptr, dev, stream)
        for t in tables:
            self._cu.scale_by(t.ptrs, t.numel, t.dtype_code, dev, stream, work_ptr + 8)

    def set_large_params_allowed(self, allowed: bool) -> None:
        """False keeps every launch within 4 KiB of kernel parameters (more, smaller launches),
        to test both paths on a GPU that takes 32 KiB."""
        self._cu.set_large_params_allowed(bool(allowed))

    def scale(self, t: TensorTable, coef: float) -> None:
        dev, stream = self._where(t)
        self._cu.scale(t.ptrs, t.numel, t.dtype_code, dev, stream, coef)

    def clamp(self, t: TensorTable, clip_value: float) -> None:
        dev, stream = self._where(t)
        self._cu.clamp(t.ptrs, t.numel, t.dtype_code, dev, stream, clip_value)

    def cross_entropy(self, logits: Any, target: Any, weight: Any, grad: Any, *, n: int, c: int,
                      ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                      reduction: str) -> Any:
        """The fused cross-entropy on CUDA arrays (ArraySpecs, as CpuBackend.cross_entropy):
        one block per row on the logits' current stream; the row losses come back to the host
        (n float64) and are summed there in the CPU kernel's fixed order."""
        import numpy as np

        from .cpu import _DTYPE_CODE, _REDUCTION, _TARGET_KIND

        dev = logits.device[1]
        stream = cuda_stream(logits.obj, dev)
        rows = np.empty(n, dtype=np.float64)
        kind = _TARGET_KIND.get(target.dtype, 2)
        total, denom, bad = self._cu.cross_entropy(
            _DTYPE_CODE[logits.dtype], dev, stream, logits.ptr, grad.ptr if grad else 0,
            target.ptr, kind, weight.ptr if weight else 0, rows.ctypes.data, n, c, ignore_index,
            label_smoothing, z_loss, softcap, _REDUCTION[reduction])
        return cross_entropy_result(bad, target, c, ignore_index, reduction, rows, total, denom)

    def elementwise_loss(self, kind: str, input: Any, target: Any, weight: Any,
                         weight_period: int, pos_weight: Any, pos_weight_period: int, grad: Any,
                         out: Any, *, param: float, grad_scale: float) -> float:
        """An element-wise loss on CUDA arrays (ArraySpecs; `out` too), in one pass on the
        input's current stream; the loss sum comes back to the host (fixed order)."""
        from .cpu import _DTYPE_CODE, _POINT_LOSS

        dev = input.device[1]
        return self._cu.elementwise_loss(
            _POINT_LOSS[kind], _DTYPE_CODE[input.dtype], dev, cuda_stream(input.obj, dev),
            input.ptr, target.ptr, weight.ptr if weight else 0, weight_period,
            pos_weight.ptr if pos_weight else 0, pos_weight_period, grad.ptr if grad else 0,
            out.ptr if out is not None else 0, input.numel, param, grad_scale)


BACKEND = CudaBackend()
