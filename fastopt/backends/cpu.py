"""The compiled C++ CPU kernels (fastopt._C): OpenMP over fixed chunks, ISA chosen at run time."""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from .._arrays import DTYPE_CODES
from .._table import MASTER, QUANT8, TensorTable
from ..ops import Scalars, check_native
from ._losses import cross_entropy_result

_NORM_KIND = {2.0: 0, 1.0: 1, math.inf: 2}
# Numbered as csrc/include/fastopt/rules/{cross_entropy,elementwise_loss}.h
_TARGET_KIND = {"int32": 0, "int64": 1}
_REDUCTION = {"none": 0, "mean": 1, "sum": 2}
_POINT_LOSS = {"mse": 0, "l1": 1, "huber": 2, "smooth_l1": 3, "bce": 4, "bce_logits": 5,
               "kl_div": 6, "kl_div_log_target": 7}
_DTYPE_CODE = {"float32": 0, "float64": 1}
_QUANT8_SIGNED, _QUANT8_UNSIGNED = 4, 5  # csrc/cpu/ops.h RowKind


class CpuBackend:
    name = "cpu"
    devices = ("cpu",)
    #: runs only the optimizers compiled into the extension, none made by from_rule
    builtin_only = True

    def __init__(self) -> None:
        self._C: Any = None
        self._error = ""
        try:
            from .. import _C

            self._C = _C
            check_native(_C.optimizers())
        except ImportError as exc:  # a source checkout that was never built
            self._error = f"fastopt._C is not built ({exc})"
        except (AttributeError, RuntimeError) as exc:  # built from other sources
            self._C, self._error = None, f"fastopt._C is stale: {exc}"

    def available(self) -> tuple[bool, str]:
        if self._C is None:
            return False, self._error
        return True, f"C++/OpenMP, ISA {self._C.isa()}, {self._C.num_threads()} threads"

    #: step() unscales the grads in its own pass and rounds 16-bit params stochastically
    #: (functional.run)
    fused_unscale = True
    stochastic_rounding = True
    #: state rows stored in another dtype than the params (TensorTable.mixed), and float32
    #: master weights of 16-bit params (functional.run)
    mixed_storage = True
    master_weights = True

    def step(self, op: str, t: TensorTable, scalars: Scalars, unscale: float = 1.0,
             stochastic: tuple[Any, int] | None = None) -> None:
        """One step of optimizer `op` over table t, in place; scalars: the op's float64 scalar
        vector (fastopt.ops: head one, sign, l1, prox, then the op's own); unscale != 1: the
        grads are unscaled in place first (g = g * unscale), in the same pass; stochastic:
        (tensor ids, base key) to round 16-bit params stochastically."""
        ids, base = stochastic if stochastic is not None else (None, 0)
        ptrs, master = t.ptrs, None
        if t.slots[-1] == MASTER:  # its own argument, never a row of the op's
            ptrs, master = t.ptrs[:-1], (t.ptrs[-1] if t.specs.get(MASTER) else None)
        state_dtypes = self._row_kinds(op, t, len(ptrs)) if t.mixed() else None
        self._C.step(op, ptrs, t.numel, t.dtype_code, scalars.vector, unscale, ids, base,
                     state_dtypes, master)

    @staticmethod
    def _row_kinds(op: str, t: TensorTable, rows: int) -> list[int]:
        """Each state row's storage code (csrc/cpu/ops.h RowStorage): its dtype's, or an 8-bit
        row's, signed or nonnegative as the op's slot says."""
        spec = ops.get(op)
        kinds = []
        for slot, d in zip(t.slots[2:rows], t.row_dtypes[2:rows], strict=True):
            if d == QUANT8:
                kinds.append(_QUANT8_UNSIGNED if spec.slot(slot).nonneg else _QUANT8_SIGNED)
            else:
                kinds.append(DTYPE_CODES[d or t.dtype])
        return kinds

    def norm_sum(self, t: TensorTable, norm_type: float) -> float:
        kind = _NORM_KIND.get(float(norm_type), 3)
        return self._C.norm_sum(t.ptrs, t.numel, t.dtype_code, kind, float(norm_type))

    def scale(self, t: TensorTable, coef: float) -> None:
        self._C.scale(t.ptrs, t.numel, t.dtype_code, coef)

    def clamp(self, t: TensorTable, clip_value: float) -> None:
        self._C.clamp(t.ptrs, t.numel, t.dtype_code, clip_value)

    # --- losses: arrays arrive as validated ArraySpecs (fastopt/losses.py) ----------------
    def cross_entropy(self, logits: Any, target: Any, weight: Any, grad: Any, *, n: int, c: int,
                      ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                      reduction: str, inner: int = 1) -> Any:
        import numpy as np

        rows = np.empty(n, dtype=np.float64)
        kind = _TARGET_KIND.get(target.dtype, 2)
        total, denom, bad = self._C.cross_entropy(
            _DTYPE_CODE[logits.dtype], logits.ptr, grad.ptr if grad else 0, target.ptr, kind,
            weight.ptr if weight else 0, rows.ctypes.data, n, c, ignore_index, label_smoothing,
            z_loss, softcap, _REDUCTION[reduction], inner)
        return cross_entropy_result(bad, target, c, ignore_index, reduction, rows, total, denom)

    def elementwise_loss(self, kind: str, input: Any, target: Any, weight: Any,
                         weight_period: int, pos_weight: Any, pos_weight_period: int, grad: Any,
                         out: Any, *, param: float, grad_scale: float) -> float:
        return self._C.elementwise_loss(
            _POINT_LOSS[kind], _DTYPE_CODE[input.dtype], input.ptr, target.ptr,
            weight.ptr if weight else 0, weight_period, pos_weight.ptr if pos_weight else 0,
            pos_weight_period, grad.ptr if grad else 0,
            out.ctypes.data if out is not None else 0, input.numel, param, grad_scale)


BACKEND = CpuBackend()
