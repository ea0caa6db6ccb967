"""The compiled CUDA C++ kernels (fastopt._C.cuda): multi-tensor-apply launches on the arrays'
device and current stream, fp32 math for float16/bfloat16 storage.

Capturable steps (CUDA graphs): every optimizer method takes `lr_ptr` and `step_ptr`, device
addresses of float64 scalars that the kernel reads instead of the host values, so a captured
step replays with the current learning rate and step count and never synchronizes with the
host. `DeviceScalars` owns such a pair.
"""

from __future__ import annotations

import math
from typing import Any

from .._arrays import cuda_stream
from .._table import TensorTable
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

    def __init__(self) -> None:
        self._cu, self._error = _module()
        self._count: int | None = None

    def available(self) -> tuple[bool, str]:
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
        return True, f"CUDA C++ (runtime {runtime // 1000}.{runtime % 1000 // 10}); {names}"

    @staticmethod
    def _where(t: TensorTable) -> tuple[int, int]:
        """(device index, stream) of a table: the stream of its first param's framework."""
        return t.device[1], cuda_stream(t.specs[t.slots[0]][0].obj, t.device[1])

    def sgd(self, t: TensorTable, *, lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, maximize: bool, first_step: bool,
            lr_ptr: int = 0, step_ptr: int = 0) -> None:
        dev, stream = self._where(t)
        self._cu.sgd(t.ptrs, t.numel, t.dtype_code, dev, stream, lr, momentum, dampening,
                     weight_decay, nesterov, maximize, first_step, lr_ptr, step_ptr)

    def adam(self, t: TensorTable, *, step: int, lr: float, beta1: float, beta2: float,
             eps: float, weight_decay: float, decoupled: bool, amsgrad: bool, maximize: bool,
             bias_correction: bool, eps_inside_sqrt: bool, lr_ptr: int = 0,
             step_ptr: int = 0) -> None:
        dev, stream = self._where(t)
        if step_ptr:
            # 0 asks the kernel to form 1 - beta^step from the device step; exactly 1 means none
            bc1 = bc2 = 0.0 if bias_correction else 1.0
        else:
            bc1 = 1.0 - beta1**step if bias_correction else 1.0
            bc2 = 1.0 - beta2**step if bias_correction else 1.0
        self._cu.adam(t.ptrs, t.numel, t.dtype_code, dev, stream, lr, beta1, beta2, eps,
                      weight_decay, bc1, bc2, decoupled, amsgrad, maximize, eps_inside_sqrt,
                      lr_ptr, step_ptr)

    def adagrad(self, t: TensorTable, *, step: int, lr: float, lr_decay: float,
                weight_decay: float, eps: float, maximize: bool, lr_ptr: int = 0,
                step_ptr: int = 0) -> None:
        dev, stream = self._where(t)
        clr = lr / (1 + (step - 1) * lr_decay)
        self._cu.adagrad(t.ptrs, t.numel, t.dtype_code, dev, stream, clr, lr_decay,
                         weight_decay, eps, maximize, lr_ptr, step_ptr)

    def rmsprop(self, t: TensorTable, *, lr: float, alpha: float, eps: float,
                weight_decay: float, momentum: float, centered: bool, maximize: bool,
                lr_ptr: int = 0, step_ptr: int = 0) -> None:
        dev, stream = self._where(t)
        self._cu.rmsprop(t.ptrs, t.numel, t.dtype_code, dev, stream, lr, alpha, eps,
                         weight_decay, momentum, centered, maximize, lr_ptr, step_ptr)

    def lion(self, t: TensorTable, *, lr: float, beta1: float, beta2: float,
             weight_decay: float, maximize: bool, lr_ptr: int = 0, step_ptr: int = 0) -> None:
        dev, stream = self._where(t)
        self._cu.lion(t.ptrs, t.numel, t.dtype_code, dev, stream, lr, beta1, beta2,
                      weight_decay, maximize, lr_ptr, step_ptr)

    def norm_sum(self, t: TensorTable, norm_type: float) -> float:
        dev, stream = self._where(t)
        kind = _NORM_KIND.get(float(norm_type), 3)
        return self._cu.norm_sum(t.ptrs, t.numel, t.dtype_code, dev, stream, kind,
                                 float(norm_type))

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

    def add_scalar(self, ptr: int, value: float, device: int, stream: int) -> None:
        """x[0] += value for a float64 scalar in device memory, on `stream` (no host sync)."""
        self._cu.add_scalar(ptr, value, device, stream)


class DeviceScalars:
    """The learning rate and step count of a capturable optimizer, as a float64 [lr, step]
    tensor on the parameters' device (torch). `advance()` adds 1 to the step on the device;
    pass `lr_ptr`/`step_ptr` to the backend's optimizer methods."""

    def __init__(self, like: Any, lr: float, step: int = 0) -> None:
        import torch

        self.tensor = torch.tensor([float(lr), float(step)], dtype=torch.float64,
                                   device=like.device)

    @property
    def lr_ptr(self) -> int:
        return self.tensor.data_ptr()

    @property
    def step_ptr(self) -> int:
        return self.tensor.data_ptr() + 8

    def set_lr(self, lr: float) -> None:
        """Host -> device copy of a new lr (outside the captured region)."""
        self.tensor[0].fill_(float(lr))

    def advance(self) -> None:
        BACKEND.add_scalar(self.step_ptr, 1.0, self.tensor.device.index or 0,
                           cuda_stream(self.tensor, self.tensor.device.index or 0))


BACKEND = CudaBackend()
