"""The NumPy reference as a backend: slow, float64, the specification itself."""

from __future__ import annotations

from typing import Any

from .. import ops
from .. import reference as ref
from .._arrays import cpu_view
from .._table import MASTER, QUANT8, TensorTable
from ..reference import quant8


class ReferenceBackend:
    name = "reference"
    devices = ("cpu",)

    def available(self) -> tuple[bool, str]:
        return True, "NumPy float64 specification"

    @staticmethod
    def _views(table: TensorTable, k: int) -> list[Any]:
        n = int(table.numel[k])
        return [None if p == 0 else cpu_view(int(p), quant8.packed_size(n), d)
                if d == QUANT8 else cpu_view(int(p), n, d or table.dtype)
                for p, d in zip(table.ptrs[:, k], table.row_dtypes, strict=True)]

    #: 16-bit params rounded stochastically on request (functional.run); state in another
    #: dtype than the params (each row is rounded to its own dtype by fastopt.reference)
    stochastic_rounding = True
    mixed_storage = True
    master_weights = True

    def step(self, op: str, table: TensorTable, scalars: ops.Scalars,
             stochastic: tuple[Any, int] | None = None) -> None:
        import numpy as np

        spec = ops.get(op)
        kw = spec.reference_kwargs(scalars)
        master = table.specs.get(MASTER) is not None
        quantized = [(r, not spec.slot(slot).nonneg) for r, slot in enumerate(table.slots)
                     if table.row_dtypes[r] == QUANT8]
        for k in range(len(table)):
            views = self._views(table, k)
            if table.slots[-1] == MASTER:
                views.pop()
            packed = {}
            for r, signed in quantized:  # 8-bit rows stepped in float64, then stored again
                packed[r] = (views[r], signed)
                views[r] = quant8.dequantize(views[r], int(table.numel[k]), signed)
            if master:  # the float32 master stepped in float64, the param its rounding
                param, copy = views[0], self._views(table, k)[-1].astype(np.float64)
                views[0] = copy
            if scalars.grad_coef != 1.0:  # the clipping coefficient, on a float64 copy
                views[1] = views[1].astype(np.float64) * scalars.grad_coef
            if master:
                spec.reference(*views, **kw)
                self._views(table, k)[-1][...] = copy.astype(np.float32)
                param[...] = copy.astype(param.dtype)
            elif stochastic is None:
                spec.reference(*views, **kw)
            else:
                # the update in float64, then the rounding of fastopt.reference.rounding
                ids, base = stochastic
                param, views[0] = views[0], views[0].astype(np.float64)
                spec.reference(*views, **kw)
                ref.stochastic_round(param, views[0],
                                     ref.rounding.tensor_key(base, int(ids[k])))
            for r, (row, signed) in packed.items():
                quant8.quantize(views[r], row, signed)

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

    # --- losses: the reference functions on NumPy views of the validated specs --------------
    @staticmethod
    def _view(spec: Any) -> Any:
        return None if spec is None else cpu_view(spec.ptr, spec.numel, spec.dtype).reshape(
            spec.shape)

    def cross_entropy(self, logits: Any, target: Any, weight: Any, grad: Any, *, n: int, c: int,
                      ignore_index: int, label_smoothing: float, z_loss: float, softcap: float,
                      reduction: str, inner: int = 1) -> Any:
        import numpy as np

        # the views keep the logits' shape, so [N, C, d1, ...] needs no `inner` here
        x, t, w = self._view(logits), self._view(target), self._view(weight)
        if target.dtype in ("int32", "int64"):
            flat = t.reshape(-1)
            bad = np.nonzero((flat != ignore_index) & ((flat < 0) | (flat >= c)))[0]
            if bad.size:
                raise ValueError(f"target: class index {int(flat[bad[0]])} at row "
                                 f"{int(bad[0])} is out of range [0, {c}) (and is not "
                                 f"ignore_index={ignore_index})")
        kw = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                  softcap=softcap or None)
        loss, g = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
        if reduction == "none":
            # per-row losses before the cast to the storage dtype
            x64 = x.astype(np.float64)
            w64 = None if w is None else w.astype(np.float64)
            loss = np.asarray(ref.cross_entropy(x64, t, w64, reduction="none", **kw)[0])
            loss = loss.reshape(-1)
        if grad is not None:
            self._view(grad)[...] = g
        return loss

    def elementwise_loss(self, kind: str, input: Any, target: Any, weight: Any,
                         weight_period: int, pos_weight: Any, pos_weight_period: int, grad: Any,
                         out: Any, *, param: float, grad_scale: float) -> float:
        import numpy as np

        x = self._view(input).astype(np.float64)
        y = self._view(target).astype(np.float64)
        kw: dict[str, Any] = {}
        if kind in ("bce", "bce_logits") and weight is not None:
            kw["weight"] = self._view(weight)
        if kind == "bce_logits" and pos_weight is not None:
            kw["pos_weight"] = self._view(pos_weight)
        if kind == "huber":
            kw["delta"] = param
        if kind == "smooth_l1":
            kw["beta"] = param
        if kind.startswith("kl_div"):
            kw["log_target"] = kind == "kl_div_log_target"
        name = {"mse": "mse_loss", "l1": "l1_loss", "huber": "huber_loss",
                "smooth_l1": "smooth_l1_loss", "bce": "binary_cross_entropy",
                "bce_logits": "binary_cross_entropy_with_logits", "kl_div": "kl_div",
                "kl_div_log_target": "kl_div"}[kind]
        fn = getattr(ref, name)
        loss, g = fn(x, y, reduction="none", **kw)
        if grad is not None:
            self._view(grad)[...] = (g * grad_scale).astype(input.dtype)
        if out is not None:
            out[...] = loss
        return float(np.sum(loss))


BACKEND = ReferenceBackend()
