"""The NumPy reference as a backend: slow, float64, the specification itself."""

from __future__ import annotations

from typing import Any

from .. import reference as ref
from .._arrays import cpu_view
from .._table import TensorTable


class ReferenceBackend:
    name = "reference"
    devices = ("cpu",)

    def available(self) -> tuple[bool, str]:
        return True, "NumPy float64 specification"

    @staticmethod
    def _views(table: TensorTable, k: int) -> list[Any]:
        n = int(table.numel[k])
        return [None if p == 0 else cpu_view(int(p), n, table.dtype) for p in table.ptrs[:, k]]

    def _each(self, fn, table: TensorTable, **hyper: Any) -> None:
        for k in range(len(table)):
            views = self._views(table, k)
            fn(*views, **hyper)

    def sgd(self, table: TensorTable, **h: Any) -> None:
        self._each(ref.sgd, table, **h)

    def adam(self, table: TensorTable, **h: Any) -> None:
        self._each(ref.adam, table, **h)

    def adagrad(self, table: TensorTable, **h: Any) -> None:
        self._each(ref.adagrad, table, **h)

    def rmsprop(self, table: TensorTable, **h: Any) -> None:
        self._each(ref.rmsprop, table, **h)

    def lion(self, table: TensorTable, **h: Any) -> None:
        self._each(ref.lion, table, **h)

    def norm_sum(self, table: TensorTable, norm_type: float) -> float:
        import numpy as np

        views = [self._views(table, k)[0].astype(np.float64) for k in range(len(table))]
        flat = np.concatenate(views) if views else np.zeros(0)
        if np.isinf(norm_type):
            return float(np.max(np.abs(flat))) if flat.size else 0.0
        return float(np.sum(np.abs(flat) ** norm_type))

    def scale(self, table: TensorTable, coef: float) -> None:
        for k in range(len(table)):
            g = self._views(table, k)[0]
            g[...] = (g.astype("float64") * coef).astype(g.dtype)

    def clamp(self, table: TensorTable, clip_value: float) -> None:
        for k in range(len(table)):
            ref.clip_grad_value([self._views(table, k)[0]], clip_value)


BACKEND = ReferenceBackend()
