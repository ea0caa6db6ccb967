"""Fused loss kernels: each loss and its gradient with respect to the input in one pass, with
no autograd, for any training loop (NumPy, PyTorch CPU tensors, any array on the host).
cross_entropy also takes CUDA arrays (torch CUDA tensors, CuPy, anything with
__cuda_array_interface__): it then runs on the `cuda` backend, on the array's current stream,
its outputs on the logits' device.

    loss, grad = fastopt.losses.cross_entropy(logits, target)
    loss = fastopt.losses.cross_entropy(logits, target, return_grad=False)   # forward only
    loss, grad = fastopt.losses.cross_entropy(logits, target, inplace=True)  # grad over logits

Arguments, defaults and results follow torch.nn.functional; fastopt's extras are keyword-only.
Results: a reduced loss ('mean', 'sum', 'batchmean') is a Python float (computed in float64 from
a fixed-order sum, then rounded to the input's dtype); reduction='none' gives an array of the
input's framework and dtype. The gradient is a new array like the input (or the input itself
with inplace=True; or the caller's `grad_out=` array, which saves an allocation per call: at
16M float32 elements its first touch costs about as much as the loss). With reduction='none'
it is d(sum of the element losses)/d input, which is what backward of loss.sum() gives in
torch.

Sums are deterministic: the same bits for any thread count. The formulas are those of
fastopt.reference, the specification every backend is tested against.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from . import backends
from ._arrays import (
    ArraySpec,
    check_contiguous,
    check_writable,
    describe,
    empty_like,
    from_host,
    to_numpy,
)
from .reference.elementwise_loss import check_probabilities

_FLOATS = ("float32", "float64")
_INDEX = ("int32", "int64")  # what the kernels read; other integer targets are widened
_OTHER_INTS = ("int8", "int16", "uint8", "uint16", "uint32", "uint64")
_REDUCTIONS = ("none", "mean", "sum")


def _float_spec(obj: Any, name: str, device: tuple[str, int] | None = ("cpu", 0),
                like: str = "logits") -> ArraySpec:
    """device: where the array must live, as the argument named `like`; None accepts host or
    CUDA arrays."""
    spec = describe(obj, name)
    if device is None:
        if spec.device[0] not in ("cpu", "cuda"):
            raise ValueError(f"{name}: unsupported device {spec.device[0]}")
    elif spec.device[0] == "cpu" and device[0] != "cpu":
        raise ValueError(f"{name}: expected an array on {device[0]}:{device[1]} like {like}, "
                         "got a host array")
    elif spec.device != device:
        where = "host arrays" if device[0] == "cpu" else f"{device[0]}:{device[1]} like {like}"
        raise ValueError(f"{name}: expected {where}; got a {spec.device[0]}:{spec.device[1]} "
                         "array")
    if spec.dtype not in _FLOATS:
        raise TypeError(f"{name}: dtype {spec.dtype} is not supported (expected float32 or "
                        "float64)")
    check_contiguous(spec, name, None)
    return spec


def _same_dtype(spec: ArraySpec, ref: ArraySpec, name: str, ref_name: str) -> None:
    if spec.dtype != ref.dtype:
        raise TypeError(f"{name}: dtype {spec.dtype} does not match {ref_name}'s {ref.dtype}")


def _overlap(a: ArraySpec, b: ArraySpec) -> bool:
    return a.ptr < b.ptr + b.nbytes and b.ptr < a.ptr + a.nbytes


def _grad_out_spec(grad_out: Any, return_grad: bool, ref: str, ref_spec: ArraySpec,
                   **others: ArraySpec | None) -> ArraySpec:
    """The spec of a caller's gradient buffer: like the array `ref` the gradient is taken with
    respect to, writable, and apart from every array the kernel reads (it reads them while it
    writes the gradient)."""
    if not return_grad:
        raise ValueError("grad_out: given with return_grad=False, which computes no gradient")
    gs = _float_spec(grad_out, "grad_out", ref_spec.device, ref)
    _same_dtype(gs, ref_spec, "grad_out", ref)
    if gs.shape != ref_spec.shape:
        whose = ref + ("'" if ref.endswith("s") else "'s")
        raise ValueError(f"grad_out: shape {list(gs.shape)} does not match {whose} "
                         f"{list(ref_spec.shape)}")
    check_writable(gs, "grad_out", None)
    for name, spec in {ref: ref_spec, **others}.items():
        if spec is not None and _overlap(gs, spec):
            raise ValueError(f"grad_out: shares memory with {name}; the gradient needs its own "
                             "buffer")
    return gs


def _reduction(reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> str:
    if reduction not in allowed:
        raise ValueError(f"reduction: expected one of {', '.join(allowed)}, got {reduction!r}")
    return reduction


def _round(value: float, dtype: str) -> float:
    return float(np.asarray(value, dtype=np.float64).astype(dtype))


def _rows_out(rows: np.ndarray, like: Any, shape: tuple[int, ...]) -> Any:
    """Per-row or per-element losses (float64) as a new array like `like`."""
    cast = rows.astype(describe(like).dtype).reshape(shape)
    if describe(like).device[0] == "cuda":
        return from_host(cast, like)
    out = empty_like(like, shape)
    if isinstance(out, np.ndarray):
        return cast
    module = type(out).__module__
    if module.startswith("torch"):
        import torch

        return torch.from_numpy(cast)
    out[...] = cast
    return out


# --- cross-entropy ----------------------------------------------------------------------


def cross_entropy(logits: Any, target: Any, weight: Any | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: float | None = None, inplace: bool = False,
                  return_grad: bool = True, grad_out: Any = None,
                  backend: str | None = None) -> Any:
    """Softmax cross-entropy over the class axis and its gradient, fused in one pass per row.

    logits [C], [N, C] or [N, C, d1, ...] (class axis 1, as torch); target either class indices
    (any integer dtype, shape [], [N] or [N, d1, ...]) or class probabilities (the logits' dtype
    and shape). A row is one position outside the class axis. With s = logits (or
    cap tanh(logits / cap)), logp = s - logsumexp(s) over the classes:
        index y:          loss_i = (1 - eps) (-w_y logp_y) + eps / C (-sum_c w_c logp_c)
        probabilities q:  loss_i = -sum_c w_c ((1 - eps) q_c + eps / C) logp_c
    as torch.nn.functional.cross_entropy (eps = label_smoothing, Szegedy et al. 2016), rows
    whose index equals ignore_index contributing nothing. 'mean' divides by the sum of w_y over
    the counted rows (the number of rows for probabilities): a batch whose every row is ignored
    gives NaN, as in torch, and a zero gradient.

    Keyword-only extras:
      z_loss: adds z * logsumexp(s)^2 to every counted row (PaLM, Chowdhery et al. 2022).
      softcap: replaces logits by cap * tanh(logits / cap) (Gemma 2 logit soft-capping).
      inplace: writes the gradient over logits (which must be writable and C-contiguous) and
        returns logits as the gradient: no memory beyond a few bytes per row (and one row per
        thread for [N, C, d1, ...] logits, whose rows are strided).
      return_grad: False returns the loss alone (forward only; logits are never written).
      grad_out: an array like logits (C-contiguous, apart from logits, target and weight) to
        write the gradient into and return, instead of a new one per call.

    Returns (loss, grad), or loss alone with return_grad=False.
    """
    reduction = _reduction(reduction)
    ce = _ce_options(label_smoothing, z_loss, softcap)
    if inplace and not return_grad:
        raise ValueError("inplace: there is no gradient to write with return_grad=False")
    if inplace and grad_out is not None:
        raise ValueError("grad_out: inplace=True writes the gradient over logits; pass one "
                         "or the other")
    ls = _float_spec(logits, "logits", None)
    if not ls.shape:
        raise ValueError("logits: expected shape [C], [N, C] or [N, C, d1, ...], got a scalar")
    c = ls.shape[0] if len(ls.shape) == 1 else ls.shape[1]
    if c < 1:
        raise ValueError("logits: the class axis is empty")
    batch_shape = ls.shape[:1] + ls.shape[2:] if len(ls.shape) > 1 else ()
    n, inner = math.prod(batch_shape), math.prod(ls.shape[2:])
    if inner > 1 and ls.device[0] != "cpu":
        raise ValueError(f"logits: [N, C, d1, ...] logits are taken from host arrays; on "
                         f"{ls.device[0]} move the class axis last (shape [..., C]), got "
                         f"{list(ls.shape)}")
    ts = describe(target, "target")
    if ts.dtype[:1] in "<>|=":  # an array-interface typestr the spec did not name
        ts = replace(ts, dtype=np.dtype(ts.dtype).name)
    if ts.device != ls.device:
        where = "a host array" if ls.device[0] == "cpu" else \
            f"an array on {ls.device[0]}:{ls.device[1]} like logits"
        raise ValueError(f"target: expected {where}, got one on "
                         f"{ts.device[0]}:{ts.device[1]}")
    if ts.dtype in _INDEX or ts.dtype in _OTHER_INTS:
        if ts.shape != batch_shape:
            raise ValueError(f"target: class indices must have shape {list(batch_shape)} for "
                             f"logits of shape {list(ls.shape)}, got {list(ts.shape)} (class "
                             "probabilities are float arrays shaped like the logits)")
        if ts.dtype in _OTHER_INTS:
            ts = _widened_index(ts)
    elif ts.dtype in _FLOATS:
        if ts.shape != ls.shape:
            raise ValueError(f"target: float targets are class probabilities and must have the "
                             f"logits' shape {list(ls.shape)}, got {list(ts.shape)} (class "
                             "indices have an integer dtype)")
        _same_dtype(ts, ls, "target", "logits")
    else:
        raise TypeError(f"target: dtype {ts.dtype} is neither class indices (an integer dtype) "
                        "nor class probabilities (float32, float64)")
    check_contiguous(ts, "target", None)
    ws = None
    if weight is not None:
        ws = _float_spec(weight, "weight", ls.device)
        _same_dtype(ws, ls, "weight", "logits")
        if ws.shape != (c,):
            raise ValueError(f"weight: expected one weight per class, shape [{c}], got "
                             f"{list(ws.shape)}")
    grad_obj = None
    gs = None
    if return_grad:
        if inplace:
            check_writable(ls, "logits", None)
            for other, other_name in ((ts, "target"), (ws, "weight")):
                if other is not None and _overlap(ls, other):
                    raise ValueError(f"{other_name}: shares memory with logits, which "
                                     "inplace=True overwrites")
            grad_obj, gs = logits, ls
        elif grad_out is not None:
            grad_obj = grad_out
            gs = _grad_out_spec(grad_out, True, "logits", ls, target=ts, weight=ws)
        else:
            grad_obj = empty_like(logits)
            gs = describe(grad_obj, "grad")
    elif grad_out is not None:
        _grad_out_spec(grad_out, False, "logits", ls)  # raises: no gradient to write
    b = backends.resolve(backend, ls.device[0])
    if not hasattr(b, "cross_entropy"):
        why = "" if ls.device[0] == "cpu" else \
            f" (CUDA arrays need the cuda backend: {backends.get('cuda').available()[1]})"
        raise backends.BackendUnavailable(f"backend {b.name!r} has no cross_entropy kernel{why}")
    strided = {"inner": inner} if inner > 1 else {}  # [N, C] rows need no stride
    loss = b.cross_entropy(ls, ts, ws, gs, n=n, c=c, ignore_index=int(ignore_index),
                           reduction=reduction, **ce, **strided)
    if reduction == "none":
        loss = _rows_out(np.asarray(loss), logits, batch_shape)
    else:
        loss = _round(loss, ls.dtype)
    return (loss, grad_obj) if return_grad else loss


def _ce_options(label_smoothing: float, z_loss: float, softcap: float | None) -> dict:
    """The cross-entropy kernels' options, checked: softcap None is 0.0 (off)."""
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: must be in [0, 1], got {label_smoothing}")
    z_loss = float(z_loss)
    if not z_loss >= 0:
        raise ValueError(f"z_loss: must be >= 0, got {z_loss}")
    if softcap is not None and not float(softcap) > 0:
        raise ValueError(f"softcap: must be > 0 (or None to disable), got {softcap}")
    return dict(label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=float(softcap) if softcap else 0.0)


def _widened_index(ts: ArraySpec) -> ArraySpec:
    """Class indices of a narrow or unsigned integer dtype as a new int64 host array (8 bytes
    a row); values beyond int64 stay out of range."""
    if ts.device[0] != "cpu":
        raise TypeError(f"target: class indices of dtype {ts.dtype} are taken from host arrays; "
                        "on CUDA use int32 or int64")
    t = _host_numpy(ts.obj, "target")
    if t.dtype == np.uint64:
        t = np.minimum(t, np.iinfo(np.int64).max)
    return describe(np.ascontiguousarray(t, dtype=np.int64), "target")


# --- element-wise losses ----------------------------------------------------------------


def _period(spec: ArraySpec | None, input_shape: tuple[int, ...], name: str) -> int:
    """weight / pos_weight broadcast over the leading axes: their shape (leading 1s dropped)
    must be a trailing part of the input's; the kernel then repeats them every numel."""
    if spec is None:
        return 0
    shape = list(spec.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if len(shape) > len(input_shape) or (shape and tuple(shape) != input_shape[-len(shape):]):
        raise ValueError(f"{name}: shape {list(spec.shape)} must match the trailing axes of the "
                         f"input's shape {list(input_shape)} (broadcast over the leading axes "
                         "only; expand it explicitly otherwise)")
    return max(spec.numel, 1)


def _elementwise(kind: str, input: Any, target: Any, reduction: str, *, weight: Any = None,
                 pos_weight: Any = None, param: float = 0.0, return_grad: bool = True,
                 backend: str | None = None, allowed: tuple[str, ...] = _REDUCTIONS,
                 check_nan: Any = None, grad_out: Any = None) -> Any:
    """check_nan(input, target), when given, runs if the losses sum to NaN: it raises for
    inputs the loss refuses (the kernels mark them with a NaN loss)."""
    reduction = _reduction(reduction, allowed)
    xs = _float_spec(input, "input", None)
    ts = _float_spec(target, "target", xs.device, "input")
    _same_dtype(ts, xs, "target", "input")
    if ts.shape != xs.shape:
        raise ValueError(f"target: shape {list(ts.shape)} does not match input's "
                         f"{list(xs.shape)}")
    ws = ps = None
    if weight is not None:
        ws = _float_spec(weight, "weight", xs.device, "input")
        _same_dtype(ws, xs, "weight", "input")
    if pos_weight is not None:
        ps = _float_spec(pos_weight, "pos_weight", xs.device, "input")
        _same_dtype(ps, xs, "pos_weight", "input")
    wp, pp = _period(ws, xs.shape, "weight"), _period(ps, xs.shape, "pos_weight")
    b = backends.resolve(backend, xs.device[0])
    if not hasattr(b, "elementwise_loss"):
        raise backends.BackendUnavailable(f"backend {b.name!r} has no element-wise loss "
                                          f"kernels for {xs.device[0]} arrays")
    on_device = xs.device[0] != "cpu"
    if grad_out is not None:
        gs = _grad_out_spec(grad_out, return_grad, "input", xs, target=ts, weight=ws,
                            pos_weight=ps)
        grad_obj = grad_out
    else:
        grad_obj = empty_like(input) if return_grad else None
        gs = describe(grad_obj, "grad") if return_grad else None
    # per-element losses: a host NumPy array, or on a GPU an array like the input (its spec)
    out_obj = out = None
    if reduction == "none":
        out_obj = empty_like(input) if on_device else np.empty(xs.shape, dtype=xs.dtype)
        out = describe(out_obj, "out") if on_device else out_obj
    n = xs.numel
    if reduction == "mean":
        scale = 1.0 / n if n else math.nan
    elif reduction == "batchmean":
        rows = xs.shape[0] if xs.shape else 1
        scale = 1.0 / rows if rows else math.nan  # torch: 0 / 0
    else:
        scale = 1.0
    total = b.elementwise_loss(kind, xs, ts, ws, wp, ps, pp, gs, out, param=float(param),
                               grad_scale=scale)
    if check_nan is not None and math.isnan(total):
        if on_device:
            check_nan(to_numpy(input), to_numpy(target))
        else:
            check_nan(_host_numpy(input, "input"), _host_numpy(target, "target"))
    if reduction == "none":
        loss = out_obj if on_device or isinstance(input, np.ndarray) else \
            _rows_out(out, input, xs.shape)
    elif reduction == "sum":
        loss = _round(total, xs.dtype)
    elif n == 0:
        loss = math.nan if reduction == "mean" else _round(0.0 * scale, xs.dtype)  # torch's
    else:
        loss = _round(total * scale, xs.dtype)
    return (loss, grad_obj) if return_grad else loss


def mse_loss(input: Any, target: Any, reduction: str = "mean", *, return_grad: bool = True,
             grad_out: Any = None, backend: str | None = None) -> Any:
    """Mean squared error: loss = (x - y)^2, dloss/dx = 2 (x - y)."""
    return _elementwise("mse", input, target, reduction, return_grad=return_grad,
                        backend=backend, grad_out=grad_out)


def l1_loss(input: Any, target: Any, reduction: str = "mean", *, return_grad: bool = True,
            grad_out: Any = None, backend: str | None = None) -> Any:
    """Mean absolute error: loss = |x - y|, dloss/dx = sign(x - y) (0 where x == y)."""
    return _elementwise("l1", input, target, reduction, return_grad=return_grad,
                        backend=backend, grad_out=grad_out)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0, *,
               return_grad: bool = True, grad_out: Any = None,
               backend: str | None = None) -> Any:
    """Huber loss (Huber 1964), d = x - y: d^2 / 2 where |d| < delta, else
    delta (|d| - delta / 2); dloss/dx = clamp(d, -delta, delta)."""
    if not float(delta) > 0:
        raise ValueError(f"delta: must be > 0, got {delta}")
    return _elementwise("huber", input, target, reduction, param=delta,
                        return_grad=return_grad, backend=backend, grad_out=grad_out)


def smooth_l1_loss(input: Any, target: Any, reduction: str = "mean", beta: float = 1.0, *,
                   return_grad: bool = True, grad_out: Any = None,
                   backend: str | None = None) -> Any:
    """Smooth L1 (Girshick 2015), d = x - y: d^2 / (2 beta) where |d| < beta, else
    |d| - beta / 2; beta = 0 is l1_loss."""
    if float(beta) < 0:
        raise ValueError(f"beta: must be >= 0, got {beta}")
    kind = "smooth_l1" if float(beta) > 0 else "l1"
    return _elementwise(kind, input, target, reduction, param=beta, return_grad=return_grad,
                        backend=backend, grad_out=grad_out)


def binary_cross_entropy(input: Any, target: Any, weight: Any | None = None,
                         reduction: str = "mean", *, return_grad: bool = True,
                         grad_out: Any = None, backend: str | None = None) -> Any:
    """BCE on probabilities x in [0, 1]: loss = -w (y log x + (1 - y) log(1 - x)), each log
    clamped at -100 and the gradient w (x - y) / max(x (1 - x), 1e-12), as torch. An input or
    target outside [0, 1], NaN included, raises ValueError naming it and the element, as torch
    raises."""
    return _elementwise("bce", input, target, reduction, weight=weight,
                        return_grad=return_grad, backend=backend,
                        check_nan=check_probabilities, grad_out=grad_out)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any | None = None,
                                     reduction: str = "mean", pos_weight: Any | None = None, *,
                                     return_grad: bool = True, grad_out: Any = None,
                                     backend: str | None = None) -> Any:
    """Sigmoid + BCE in the stable form, l = (p - 1) y + 1 (p = pos_weight):
        loss = w ((1 - y) x + l (log(1 + e^-|x|) + max(-x, 0)))
        dloss/dx = w (l sigmoid(x) - p y)
    weight and pos_weight broadcast over the input's leading axes (pos_weight: one per class,
    the last axis)."""
    return _elementwise("bce_logits", input, target, reduction, weight=weight,
                        pos_weight=pos_weight, return_grad=return_grad, backend=backend,
                        grad_out=grad_out)


def kl_div(input: Any, target: Any, reduction: str = "mean", log_target: bool = False, *,
           return_grad: bool = True, grad_out: Any = None,
           backend: str | None = None) -> Any:
    """Kullback-Leibler divergence, input holding log-probabilities:
        loss = xlogy(y, y) - y x,  dloss/dx = -y;  log_target: e^y (y - x), -e^y.
    reduction 'batchmean' divides the sum by input.shape[0] (the mathematically correct KL
    per sample); 'mean' divides by the number of elements, as torch."""
    kind = "kl_div_log_target" if log_target else "kl_div"
    return _elementwise(kind, input, target, reduction, return_grad=return_grad,
                        backend=backend, allowed=_REDUCTIONS + ("batchmean",),
                        grad_out=grad_out)


# --- linear + cross-entropy ---------------------------------------------------------------


def _host_numpy(obj: Any, name: str) -> np.ndarray:
    """A zero-copy NumPy view of a host array (torch CPU tensors included)."""
    if isinstance(obj, np.ndarray):
        return obj
    if type(obj).__module__.startswith("torch"):
        if obj.device.type != "cpu":
            raise ValueError(f"{name}: expected a CPU tensor")
        return obj.detach().numpy()
    if hasattr(obj, "__array_interface__"):
        return np.asarray(obj)
    return np.from_dlpack(obj)


def _like(arr: np.ndarray, like: Any) -> Any:
    if isinstance(like, np.ndarray) or not isinstance(arr, np.ndarray):
        return arr
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.from_numpy(arr)
    return arr


#: Logits of one chunk of rows: few enough bytes that the chunk stays a small part of the
#: [N, V] logits, enough rows (1024 where the budget allows) that the chunk's three GEMMs run at
#: the BLAS rate rather than as skinny products
_CHUNK_BYTES = 1 << 27
_MIN_ROWS = 1024


def _chunk_rows(n: int, v: int, itemsize: int) -> int:
    """Rows per chunk: at most _CHUNK_BYTES of logits and at most max(1024, N / 8) rows,
    spread evenly over the chunks so that none is a skinny remainder."""
    rows = min(_CHUNK_BYTES // max(v * itemsize, 1), max(_MIN_ROWS, -(-n // 8)))
    rows = max(1, min(n, rows))
    return -(-n // -(-n // rows)) if n else 1


class _NumpyGemm:
    """The chunk's products on NumPy arrays. With SciPy, BLAS gemm writes straight into the
    gradients (beta = 1 accumulates grad_weight in place), every operand passed as a Fortran
    view of C-ordered memory, so nothing is copied; without it, np.matmul into one
    preallocated [V, H] buffer and an in-place add."""

    def __init__(self, dtype: np.dtype) -> None:
        try:
            from scipy.linalg import blas
        except ImportError:  # pragma: no cover - SciPy comes with the test extras
            blas = None
        self._gemm = None if blas is None else (blas.sgemm if dtype == np.float32 else
                                                blas.dgemm)
        self._tmp: np.ndarray | None = None

    @staticmethod
    def empty(shape: tuple[int, ...], like: np.ndarray, zero: bool = False,
              float64: bool = False) -> np.ndarray:
        dtype = np.float64 if float64 else like.dtype
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)

    def _into(self, c: np.ndarray, *args: Any, **kw: Any) -> None:
        out = self._gemm(*args, c=c, overwrite_c=True, **kw)
        if out.ctypes.data != c.ctypes.data:  # pragma: no cover - SciPy copied after all
            c[...] = out

    @staticmethod
    def mask(m: np.ndarray) -> np.ndarray:
        return m

    @staticmethod
    def cast(x: np.ndarray, dtype: Any) -> np.ndarray:
        return x.astype(dtype)

    def logits(self, hc: np.ndarray, w: np.ndarray, b: np.ndarray | None,
               out: np.ndarray) -> None:
        if self._gemm is None:
            np.matmul(hc, w.T, out=out)
            if b is not None:
                out += b
        elif b is None:  # out.T [V, rows] = w @ hc.T
            self._into(out.T, 1.0, w.T, hc.T, trans_a=True)
        else:
            out[...] = b
            self._into(out.T, 1.0, w.T, hc.T, beta=1.0, trans_a=True)

    def grad_hidden(self, dl: np.ndarray, w: np.ndarray, alpha: float, out: np.ndarray) -> None:
        if self._gemm is None:
            np.matmul(dl, w, out=out)
            out *= out.dtype.type(alpha)
        else:  # out.T [H, rows] = alpha w.T @ dl.T
            self._into(out.T, alpha, w.T, dl.T)

    def grad_weight(self, dl: np.ndarray, hc: np.ndarray, alpha: float, acc: np.ndarray) -> None:
        if self._gemm is None:
            if self._tmp is None:
                self._tmp = np.empty_like(acc)
            np.matmul(dl.T, hc, out=self._tmp)
            self._tmp *= acc.dtype.type(alpha)
            acc += self._tmp
        else:  # acc.T [H, V] += alpha hc.T @ dl
            self._into(acc.T, alpha, hc.T, dl.T, beta=1.0, trans_b=True)

    @staticmethod
    def bias_sum(dl: np.ndarray, acc: np.ndarray) -> None:
        acc += dl.sum(axis=0, dtype=np.float64)


class _TorchGemm:
    """The chunk's products on torch CPU tensors, with torch's GEMMs (usually faster than
    NumPy's BLAS): mm/addmm into the chunk buffer and the gradients, addmm_ with beta = 1
    accumulating grad_weight in place."""

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def empty(self, shape: tuple[int, ...], like: Any, zero: bool = False,
              float64: bool = False) -> Any:
        dtype = self.torch.float64 if float64 else like.dtype
        return (self.torch.zeros if zero else self.torch.empty)(shape, dtype=dtype)

    def mask(self, m: np.ndarray) -> Any:
        return self.torch.from_numpy(m)

    @staticmethod
    def cast(x: Any, dtype: Any) -> Any:
        return x.to(dtype)

    def logits(self, hc: Any, w: Any, b: Any, out: Any) -> None:
        if b is None:
            self.torch.mm(hc, w.T, out=out)
        else:
            self.torch.addmm(b, hc, w.T, out=out)

    @staticmethod
    def grad_hidden(dl: Any, w: Any, alpha: float, out: Any) -> None:
        out.addmm_(dl, w, beta=0, alpha=alpha)  # beta = 0: out's old contents are not read

    @staticmethod
    def grad_weight(dl: Any, hc: Any, alpha: float, acc: Any) -> None:
        acc.addmm_(dl.T, hc, alpha=alpha)

    def bias_sum(self, dl: Any, acc: Any) -> None:
        acc += dl.sum(0, dtype=self.torch.float64)


def _is_torch(obj: Any) -> bool:
    return obj is None or type(obj).__module__.startswith("torch")


def linear_cross_entropy(hidden: Any, weight: Any, target: Any, bias: Any | None = None, *,
                         class_weight: Any | None = None, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: float | None = None,
                         chunk_size: int | None = None, return_grad: bool = True,
                         backend: str | None = None) -> Any:
    """cross_entropy(hidden @ weight.T + bias, target) and its gradients, chunked over rows so
    the [N, V] logits never exist at once.

    hidden [N, H], weight [V, H] (the output projection, as torch.nn.Linear), target [N] class
    indices (any integer dtype), bias [V] or None. Per chunk of rows, in one [rows, V] buffer:
    logits = hidden_chunk @ weight.T + bias (GEMM), the fused cross-entropy kernel writes
    dlogits over them, then with a = 1 / (sum of the counted rows' class weights) for 'mean':
        grad_hidden_chunk = a dlogits @ weight,  grad_weight += a dlogits.T @ hidden_chunk
    (a GEMM accumulating in place, beta = 1), grad_bias += a (sum of dlogits over the chunk).
    The GEMMs are torch's when hidden and weight are torch tensors, else BLAS through SciPy
    (NumPy's matmul without it). Peak extra memory is one chunk buffer besides the gradients:
    chunk_size defaults to at most 128 MiB of logits and at most max(1024, N / 8) rows. Other
    arguments as cross_entropy (class_weight is its per-class `weight`); reduction 'mean' or
    'sum'. With 'mean' and every target ignored the loss is NaN and the gradients are zeros,
    as torch's.

    Returns (loss, grad_hidden, grad_weight, grad_bias or None), or the loss alone with
    return_grad=False (no gradient is computed).
    """
    reduction = _reduction(reduction, ("mean", "sum"))
    ce = _ce_options(label_smoothing, z_loss, softcap)
    h = _host_numpy(hidden, "hidden")
    w = _host_numpy(weight, "weight")
    t = _host_numpy(target, "target")
    for name, a in (("hidden", h), ("weight", w)):
        if a.dtype.name not in _FLOATS:
            raise TypeError(f"{name}: dtype {a.dtype} is not supported (float32 or float64)")
        if a.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array, got shape {list(a.shape)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: array is not C-contiguous")
    if w.dtype != h.dtype:
        raise TypeError(f"weight: dtype {w.dtype} does not match hidden's {h.dtype}")
    n, hdim = h.shape
    v = w.shape[0]
    if w.shape[1] != hdim:
        raise ValueError(f"weight: expected shape [V, {hdim}] for hidden of shape "
                         f"{list(h.shape)}, got {list(w.shape)}")
    if t.dtype.name not in _INDEX + _OTHER_INTS:
        raise TypeError(f"target: linear_cross_entropy takes class indices (an integer dtype), "
                        f"got {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"target: expected shape [{n}], got {list(t.shape)}")
    if t.dtype.name not in _INDEX or not t.flags.c_contiguous:
        t = _widened_index(describe(t, "target")).obj
    b = None
    if bias is not None:
        b = _host_numpy(bias, "bias")
        if b.dtype != h.dtype or b.shape != (v,) or not b.flags.c_contiguous:
            raise ValueError(f"bias: expected a contiguous array of shape [{v}] and dtype "
                             f"{h.dtype}, got {list(b.shape)} {b.dtype}")
    cw = None
    if class_weight is not None:
        cw = _host_numpy(class_weight, "class_weight")
        if cw.dtype != h.dtype or cw.shape != (v,):
            raise ValueError(f"class_weight: expected shape [{v}] and dtype {h.dtype}, got "
                             f"{list(cw.shape)} {cw.dtype}")
        cw = np.ascontiguousarray(cw)
    if chunk_size is None:
        chunk_size = _chunk_rows(n, v, h.itemsize)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    counted = t != ignore_index
    if np.any(counted & ((t < 0) | (t >= v))):
        i = int(np.nonzero(counted & ((t < 0) | (t >= v)))[0][0])
        raise ValueError(f"target: class index {int(t[i])} at row {i} is out of range "
                         f"[0, {v})")
    denom = float(np.sum(cw[t[counted]], dtype=np.float64)) if cw is not None else \
        float(np.count_nonzero(counted))
    alpha = 1.0 / denom if reduction == "mean" and denom else 1.0
    be = backends.resolve(backend, "cpu")
    if not hasattr(be, "cross_entropy"):
        raise backends.BackendUnavailable(f"backend {be.name!r} has no cross_entropy kernel")
    ws = None if cw is None else describe(cw, "class_weight")

    on_torch = _is_torch(hidden) and _is_torch(weight) and _is_torch(bias)
    if on_torch:
        gemm: Any = _TorchGemm()
        hx, wx = hidden.detach(), weight.detach()
        bx = None if bias is None else bias.detach()
    else:
        gemm, hx, wx, bx = _NumpyGemm(h.dtype), h, w, b
    gh = gemm.empty((n, hdim), hx) if return_grad else None
    gw = gemm.empty((v, hdim), hx, zero=True) if return_grad else None
    gb = gemm.empty((v,), hx, zero=True, float64=True) if return_grad and b is not None \
        else None
    buf = gemm.empty((min(chunk_size, n), v), hx)
    rows_loss = []
    for i0 in range(0, n, chunk_size):
        i1 = min(n, i0 + chunk_size)
        logits = buf[: i1 - i0]
        gemm.logits(hx[i0:i1], wx, bx, logits)
        ls = describe(logits, "logits")
        rows_loss.append(be.cross_entropy(ls, describe(t[i0:i1], "target"), ws,
                                          ls if return_grad else None, n=i1 - i0, c=v,
                                          ignore_index=int(ignore_index), reduction="none",
                                          **ce))
        if not return_grad:
            continue
        gemm.grad_hidden(logits, wx, alpha, gh[i0:i1])
        gemm.grad_weight(logits, hx[i0:i1], alpha, gw)
        if gb is not None:
            gemm.bias_sum(logits, gb)
    total = math.fsum(np.concatenate(rows_loss)) if rows_loss else 0.0
    loss = total
    if reduction == "mean":
        loss = total / denom if denom else math.nan
    if not return_grad:
        return _round(loss, h.dtype.name)
    if reduction == "mean" and not denom and np.any(counted):
        # counted rows of zero class weight: NaN gradients, as torch (every row ignored
        # leaves the zero gradients those rows gave)
        gh[gemm.mask(counted)] = math.nan
        gw[...] = math.nan
        if gb is not None:
            gb[...] = math.nan
    if gb is not None:
        gb = _like(gemm.cast(gb * alpha, hx.dtype), bias)
    return (_round(loss, h.dtype.name), _like(gh, hidden), _like(gw, weight), gb)


__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "linear_cross_entropy", "mse_loss",
           "smooth_l1_loss"]
