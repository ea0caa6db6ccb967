"""Gradient clipping over lists of arrays, fused and deterministic.

The norm is one multi-tensor reduction (fixed-order: the same bits for any thread count),
the scaling one multi-tensor kernel; results follow torch.nn.utils.clip_grad_norm_ and
clip_grad_value_.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from . import backends
from ._table import build_tables


def _tables(grads: Sequence[Any]):
    return build_tables(("grad",), {"grad": grads}, written={"grad"})


def clip_grad_norm_(grads: Sequence[Any], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, *, backend: str | None = None) -> float:
    """Scale grads in place so their joint norm is at most max_norm; return the norm before.

        norm = (sum over all elements |g|^p)^(1/p)        (max |g| for p = inf)
        g = g * min(max_norm / (norm + 1e-6), 1)

    An empty list returns 0.0. With error_if_nonfinite, a NaN or infinite norm raises
    RuntimeError and leaves the grads unchanged (as torch).
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"Invalid norm_type: {norm_type} (must be > 0 or inf)")
    if math.isnan(max_norm):
        raise ValueError("max_norm is NaN")
    if len(grads) == 0:
        return 0.0
    tables = _tables(grads)
    parts = [backends.resolve(backend, t.device[0]).norm_sum(t, norm_type) for t in tables]
    if math.isinf(norm_type):
        total = max(parts, key=lambda x: (not math.isnan(x), x)) if len(parts) > 1 else parts[0]
        if any(math.isnan(x) for x in parts):
            total = math.nan
    else:
        total = math.fsum(parts) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the "
                           "gradients by the non-finite norm anyway, set "
                           "error_if_nonfinite=False")
    coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    for t in tables:
        backends.resolve(backend, t.device[0]).scale(t, coef)
    return total


def clip_grad_value_(grads: Sequence[Any], clip_value: float, *,
                     backend: str | None = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    if not clip_value >= 0:
        raise ValueError(f"Invalid clip_value: {clip_value} (must be >= 0)")
    if len(grads) == 0:
        return
    for t in _tables(grads):
        backends.resolve(backend, t.device[0]).clamp(t, float(clip_value))


__all__ = ["clip_grad_norm_", "clip_grad_value_"]
