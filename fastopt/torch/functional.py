"""``torch.nn.functional`` losses as autograd functions over fastopt's fused loss kernels.

Same signatures, defaults and results as ``torch.nn.functional``. The forward pass calls the
fused kernel (``fastopt.losses``), which computes the loss and its gradient with respect to the
input in one pass over memory; the gradient is kept for backward, so ``loss.backward()`` costs a
scale by the incoming gradient (nothing at all when that is 1, as for ``loss.backward()`` on a
reduced loss). When the input does not require a gradient only the loss is computed.

Inputs the kernels do not take go to ``torch.nn.functional`` itself, with identical results:
tensors off the CPU or not float32/float64, a layout the kernel cannot read in place (dense
C-contiguous, or class-axis-last such as channels_last for cross-entropy), a target or weight
that requires grad, ``weight=`` of mse/l1/huber, and anything the kernels' validation refuses
(torch then raises its own error for input it refuses too).

Double backward (``create_graph=True``, e.g. a gradient penalty): the first backward of a fused
loss then differentiates the same loss written in torch ops, on the inputs the forward pass
received, so second derivatives are torch's. The inputs are kept for that until a backward
without ``create_graph`` releases them; an input modified in place in between raises, as torch
does. In-place cross-entropy cannot be differentiated twice (its input now holds the gradient):
that raises a RuntimeError.

In-place cross-entropy (``inplace=True``, a fastopt extra) writes the gradient over the logits
instead of allocating one, saving the logits-sized buffer. It is allowed only on a non-leaf
logits tensor that requires grad (what the LM head's matmul produces, or a view of it), never on
a leaf, a view of a leaf (a parameter) or user data. The logits' version counter is bumped, so
if any autograd node saved the logits (or a view sharing their memory) for its own backward,
e.g. ``tanh`` before the loss, ``backward()`` raises torch's "modified by an inplace operation"
error instead of using wrong values. After the call the logits tensor holds the gradient: do
not read it as logits any more (compute accuracy and the like before the loss). Where the
fused kernel cannot take the logits, torch computes the loss and they are left untouched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor
from torch.nn import _reduction

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "linear_cross_entropy", "mse_loss",
           "smooth_l1_loss"]

_FLOATS = (torch.float32, torch.float64)
_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_MISSING = object()
_losses_module: Any = _MISSING


def _losses() -> Any:
    """fastopt.losses, or None where this build has no loss kernels."""
    global _losses_module
    if _losses_module is _MISSING:
        try:
            _losses_module = importlib.import_module("fastopt.losses")
        except ImportError:
            _losses_module = None
    return _losses_module


def fused_losses_available() -> bool:
    return _losses() is not None


def _host_dense(t: Any, dtypes: tuple[torch.dtype, ...] = _FLOATS) -> bool:
    return (t is None or (isinstance(t, Tensor) and t.device.type == "cpu" and t.dtype in dtypes
                          and t.layout == torch.strided and t.is_contiguous()))


def _no_grad_needed(*tensors: Any) -> bool:
    return all(t is None or not t.requires_grad for t in tensors)


class _Call:
    """One fused loss evaluation: forward's kernel call and what backward needs.

    compute() -> (loss, one gradient per autograd input, None where not wanted);
    differentiable(*inputs) -> the same loss in torch ops, differentiated under create_graph;
    class_dim: for per-row losses (reduction='none'), the axis of the gradient that grad_out
    lacks; inplace: the kernel wrote its gradient over the (only) input.
    """

    def __init__(self, compute: Callable[[], tuple[Any, tuple[Tensor | None, ...]]],
                 differentiable: Callable[..., Tensor], class_dim: int | None = None,
                 inplace: bool = False) -> None:
        self.compute = compute
        self.differentiable = differentiable
        self.class_dim = class_dim
        self.inplace = inplace
        self.inputs: tuple[Tensor, ...] | None = None
        self.versions: list[int] = []

    def scale(self, g: Tensor, grad_out: Tensor) -> Tensor:
        if grad_out.dim() == 0 and grad_out.device.type == "cpu":
            factor = float(grad_out)
            return g if factor == 1.0 else g * factor
        if self.class_dim is not None:
            grad_out = grad_out.unsqueeze(self.class_dim)
        return g * grad_out

    def second_order(self, grad_out: Tensor, wanted: tuple[bool, ...]) -> list[Tensor | None]:
        """The gradient as a differentiable function of the inputs and grad_out."""
        if self.inplace:
            raise RuntimeError("cross_entropy(inplace=True) overwrote its input with the "
                               "gradient, so it cannot be differentiated twice "
                               "(create_graph=True); call it without inplace=True")
        if self.inputs is None:
            raise RuntimeError("a backward without create_graph=True already ran through this "
                               "fused loss and released its inputs; pass create_graph=True to "
                               "the first backward to differentiate twice")
        for i, (t, v) in enumerate(zip(self.inputs, self.versions, strict=True)):
            if t._version != v:
                raise RuntimeError(f"one of the variables needed for gradient computation has "
                                   f"been modified by an inplace operation: input {i} of a "
                                   f"fused loss is at version {t._version}; expected version "
                                   f"{v} instead")
        with torch.enable_grad():
            loss = self.differentiable(*self.inputs)
            which = [t for t, w in zip(self.inputs, wanted, strict=True) if w]
            grads = iter(torch.autograd.grad(loss, which, grad_out, create_graph=True,
                                             allow_unused=True))
        return [next(grads) if w else None for w in wanted]


class _FusedLoss(torch.autograd.Function):
    """loss = kernel(inputs); the kernel's d loss / d inputs saved in forward, scaled by the
    incoming gradient in backward (or, under create_graph, re-derived in torch ops)."""

    @staticmethod
    def forward(ctx: Any, call: _Call, *inputs: Tensor) -> Tensor:
        loss, grads = call.compute()
        # saved (not a ctx attribute) so autograd frees them right after backward: a leaf's
        # AccumulateGrad can then take the tensor as .grad instead of copying it
        ctx.save_for_backward(*grads)
        ctx.call = call
        if not call.inplace:
            call.inputs = inputs
            call.versions = [t._version for t in inputs]
        if not isinstance(loss, Tensor):
            loss = torch.tensor(loss, dtype=inputs[0].dtype)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        call: _Call = ctx.call
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            return (None, *call.second_order(grad_out, ctx.needs_input_grad[1:]))
        call.inputs = None  # nothing will differentiate twice through this graph
        return (None, *(None if g is None else call.scale(g, grad_out)
                        for g in ctx.saved_tensors))


def _run(input: Tensor, kernel: Callable[..., Any], torch_loss: Callable[[Tensor], Tensor], *,
         class_dim: int | None = None, inplace: bool = False) -> Tensor:
    """The fused kernel when it takes these tensors, else torch's own function.

    kernel(x, return_grad) runs fastopt.losses on the detached input: the loss, or
    (loss, d loss / d x) with return_grad; torch_loss(input) is the same loss in torch ops.
    """
    if _losses() is None:
        return torch_loss(input)
    try:
        if not (torch.is_grad_enabled() and input.requires_grad):
            loss = kernel(input.detach(), False)
            return loss if isinstance(loss, Tensor) else torch.tensor(loss, dtype=input.dtype)

        def compute() -> tuple[Any, tuple[Tensor]]:
            loss, grad = kernel(input.detach(), True)
            if inplace:
                # tell autograd the logits' memory changed: a node that saved them raises
                torch.autograd.graph.increment_version(input)
            return loss, (grad,)

        return _FusedLoss.apply(_Call(compute, torch_loss, class_dim, inplace), input)
    except (TypeError, ValueError):
        # the kernel refuses these arguments: torch computes them (or raises its own error)
        return torch_loss(input)


def _reduction_of(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return _reduction.legacy_get_string(size_average, reduce)
    return reduction


def _torch_cross_entropy(x: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                         reduction: str, label_smoothing: float, z_loss: float = 0.0,
                         softcap: float | None = None) -> Tensor:
    """cross_entropy with soft-capping and the z-loss, in torch ops (any device and dtype,
    differentiable to any order): torch's function on the capped logits, plus z lse^2 on every
    counted row. Integer class indices of any dtype are taken."""
    if not target.is_floating_point() and target.dtype != torch.int64:
        target = target.long()
    s = x if softcap is None else softcap * torch.tanh(x / softcap)
    if not z_loss:
        return TF.cross_entropy(s, target, weight, ignore_index=ignore_index,
                                reduction=reduction, label_smoothing=label_smoothing)
    rows = TF.cross_entropy(s, target, weight, ignore_index=ignore_index, reduction="none",
                            label_smoothing=label_smoothing)
    lse = torch.logsumexp(s, dim=1 if s.dim() > 1 else 0)
    probs = target.is_floating_point()
    counted = torch.ones_like(rows, dtype=torch.bool) if probs else target != ignore_index
    rows = rows + torch.where(counted, z_loss * lse.square(), 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum" or probs:
        return rows.sum() if reduction == "sum" else rows.mean()
    y = target.masked_fill(~counted, 0)
    denom = counted.sum() if weight is None else torch.where(counted, weight[y], 0.0).sum()
    return rows.sum() / denom


def _class_last(x: Tensor) -> bool:
    """[N, C, d1, ...] whose memory is [N, d1, ..., C] (channels_last): rows are contiguous."""
    return x.dim() > 2 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


@torch._disable_dynamo
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, inplace: bool = False, z_loss: float = 0.0,
                  softcap: float | None = None) -> Tensor:
    """Softmax cross-entropy over the class axis, as torch.nn.functional.cross_entropy (logits
    [C], [N, C] or [N, C, d1, ...]; class indices or class probabilities as target, per-class
    weight, ignore_index, label smoothing (Szegedy et al., "Rethinking the Inception
    Architecture", CVPR 2016)). With logp = log_softmax(x) and eps = label_smoothing:

        index y:          loss_i = (1 - eps) (-w_y logp_y) + eps / C (-sum_c w_c logp_c)
        probabilities q:  loss_i = -sum_c w_c ((1 - eps) q_c + eps / C) logp_c
        d loss_i / d x = softmax(x) * sum_c(coefficients) - coefficients

    Class indices may have any integer dtype (torch takes int64 and uint8). Keyword-only
    extras: inplace=True writes the gradient over input (see the module docstring for when
    that is allowed); z_loss adds z * logsumexp(x)^2 per counted row (PaLM, Chowdhery et al.
    2022); softcap replaces x by cap * tanh(x / cap) (Gemma 2).
    """
    reduction = _reduction_of(size_average, reduce, reduction)

    def torch_loss(x: Tensor) -> Tensor:
        return _torch_cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing,
                                    z_loss, softcap)

    if inplace:
        if not (torch.is_grad_enabled() and input.requires_grad):
            raise ValueError("inplace=True writes the gradient over input for backward, but "
                             "input does not require grad here (call without inplace)")
        base = input if input._base is None else input._base
        if base.is_leaf:
            raise ValueError("inplace=True: input is a leaf tensor or a view of one; the "
                             "gradient may only overwrite a non-leaf activation (e.g. the "
                             "output of a matmul)")
    # channels_last logits go to the kernel as [rows, C] views of their own memory, so an
    # in-place gradient lands in the caller's layout
    last = isinstance(input, Tensor) and _class_last(input)
    probs = isinstance(target, Tensor) and target.is_floating_point()
    fusable = (isinstance(input, Tensor) and isinstance(target, Tensor)
               and _host_dense(input.movedim(1, -1) if last else input)
               and _host_dense(weight) and _no_grad_needed(target, weight)
               and (_host_dense(target.movedim(1, -1) if last else target) if probs
                    else _host_dense(target, _INTS)))
    if not fusable:
        return torch_loss(input)
    kwargs: dict[str, Any] = dict(weight=weight, ignore_index=ignore_index,
                                  reduction=reduction, label_smoothing=label_smoothing)
    if z_loss != 0.0:
        kwargs["z_loss"] = z_loss
    if softcap is not None:
        kwargs["softcap"] = softcap
    c = input.shape[1] if input.dim() > 1 else input.shape[0]
    rows_shape = (input.shape[0], *input.shape[2:], c)

    def kernel(x: Tensor, return_grad: bool) -> Any:
        t = target
        if last:
            x = x.movedim(1, -1).reshape(-1, c)
            t = t.movedim(1, -1).reshape(-1, c) if probs else t.reshape(-1)
        out = _losses().cross_entropy(x, t, return_grad=return_grad,
                                      inplace=inplace and return_grad, **kwargs)
        if not last:
            return out
        loss, grad = out if return_grad else (out, None)
        if reduction == "none":
            loss = loss.reshape(rows_shape[:-1])
        return (loss, grad.view(rows_shape).movedim(-1, 1)) if return_grad else loss

    class_dim = 1 if reduction == "none" and input.dim() > 1 else None
    return _run(input, kernel, torch_loss, class_dim=class_dim, inplace=inplace)


def _elementwise(name: str, input: Tensor, target: Tensor, reduction: str, *,
                 torch_weight: Tensor | None = None, **kw: Any) -> Tensor:
    """fastopt.losses.<name>(input, target, reduction=reduction, **kw) under autograd, or
    torch.nn.functional.<name> with the same arguments where the kernels do not apply: not
    both CPU-dense tensors of one shape, a target, weight or pos_weight needing grad, or a
    torch_weight (the per-element weight= of mse, l1 and huber, which only torch takes)."""

    def torch_loss(x: Tensor) -> Tensor:
        weighted = {} if torch_weight is None else dict(weight=torch_weight)
        return getattr(TF, name)(x, target, reduction=reduction, **kw, **weighted)

    extra = (kw.get("weight"), kw.get("pos_weight"))
    if not (torch_weight is None and isinstance(input, Tensor) and isinstance(target, Tensor)
            and input.shape == target.shape and all(map(_host_dense, (input, target, *extra)))
            and _no_grad_needed(target, *extra)):
        return torch_loss(input)

    def kernel(x: Tensor, return_grad: bool) -> Any:
        return getattr(_losses(), name)(x, target, return_grad=return_grad,
                                        reduction=reduction, **kw)

    return _run(input, kernel, torch_loss)


@torch._disable_dynamo
def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Mean squared error, loss = (x - y)^2, d loss / dx = 2 (x - y); as
    torch.nn.functional.mse_loss (weight= goes to torch)."""
    return _elementwise("mse_loss", input, target, _reduction_of(size_average, reduce, reduction),
                        torch_weight=weight)


@torch._disable_dynamo
def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """Mean absolute error, loss = |x - y|, d loss / dx = sign(x - y); as
    torch.nn.functional.l1_loss (weight= goes to torch)."""
    return _elementwise("l1_loss", input, target, _reduction_of(size_average, reduce, reduction),
                        torch_weight=weight)


@torch._disable_dynamo
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """Huber loss (Huber, "Robust Estimation of a Location Parameter", 1964), d = x - y:
    d^2 / 2 where |d| < delta, else delta (|d| - delta / 2); as
    torch.nn.functional.huber_loss (weight= goes to torch)."""
    return _elementwise("huber_loss", input, target, reduction, torch_weight=weight, delta=delta)


@torch._disable_dynamo
def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Smooth L1 (Girshick, "Fast R-CNN", ICCV 2015), d = x - y: d^2 / (2 beta) where
    |d| < beta, else |d| - beta / 2; as torch.nn.functional.smooth_l1_loss."""
    return _elementwise("smooth_l1_loss", input, target,
                        _reduction_of(size_average, reduce, reduction), beta=beta)


@torch._disable_dynamo
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on probabilities, loss = -w (y log x + (1 - y) log(1 - x)) with
    each log clamped at -100; as torch.nn.functional.binary_cross_entropy (an input or target
    outside [0, 1], NaN included, raises torch's RuntimeError)."""
    return _elementwise("binary_cross_entropy", input, target,
                        _reduction_of(size_average, reduce, reduction), weight=weight)


@torch._disable_dynamo
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross-entropy in the numerically stable form, with l = 1 + (p - 1) y
    (p = pos_weight): loss = w ((1 - y) x + l (log(1 + e^-|x|) + max(-x, 0))); as
    torch.nn.functional.binary_cross_entropy_with_logits."""
    return _elementwise("binary_cross_entropy_with_logits", input, target,
                        _reduction_of(size_average, reduce, reduction), weight=weight,
                        pos_weight=pos_weight)


@torch._disable_dynamo
def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None,
           reduce: bool | None = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence with input holding log-probabilities: loss = y (log y - x)
    (log_target: e^y (y - x)); 'batchmean' divides the sum by the batch size; as
    torch.nn.functional.kl_div."""
    return _elementwise("kl_div", input, target, _reduction_of(size_average, reduce, reduction),
                        log_target=log_target)


def _linear_ce_chunks(h: Tensor, w: Tensor, t: Tensor, b: Tensor | None, chunk_size: int | None,
                      return_grad: bool, ce: dict[str, Any]) -> Any:
    """fastopt.losses.linear_cross_entropy's algorithm in torch ops, for tensors its kernels
    do not take (CUDA, half precision): per chunk of rows, logits, their gradient by autograd
    over torch's cross-entropy, and the products into the three gradients."""
    n, v = h.shape[0], w.shape[0]
    chunk = chunk_size or max(1, min(n, (1 << 22) // max(v, 1)))
    kw = dict(ce, reduction="sum")
    gh = torch.empty_like(h) if return_grad else None
    gw = torch.zeros_like(w) if return_grad else None
    gb = torch.zeros_like(b) if return_grad and b is not None else None
    total = torch.zeros((), dtype=torch.float64, device=h.device)
    for i0 in range(0, n, chunk):
        hc, tc = h[i0:i0 + chunk], t[i0:i0 + chunk]
        logits = hc @ w.T if b is None else torch.addmm(b, hc, w.T)
        if not return_grad:
            total += _torch_cross_entropy(logits, tc, **kw).double()
            continue
        with torch.enable_grad():
            logits.requires_grad_()
            loss = _torch_cross_entropy(logits, tc, **kw)
            (dl,) = torch.autograd.grad(loss, logits)
        total += loss.detach().double()
        gh[i0:i0 + chunk] = dl @ w
        gw.addmm_(dl.T, hc)
        if gb is not None:
            gb += dl.sum(0)
    loss = total.to(h.dtype)
    if ce["reduction"] == "mean":
        counted = t != ce["ignore_index"]
        cw = ce["weight"]
        denom = counted.sum(dtype=torch.float64) if cw is None else \
            torch.where(counted, cw[t.masked_fill(~counted, 0).long()], 0).sum(dtype=torch.float64)
        loss = (total / denom).to(h.dtype)
        if return_grad:
            # every row ignored: 0 / 0 would turn the zero gradients NaN (torch gives zeros)
            scale = torch.where(counted.any(), 1 / denom, 0.0).to(h.dtype)
            gh *= scale
            gw *= scale
            if gb is not None:
                gb *= scale
    return (loss, gh, gw, gb) if return_grad else loss


@torch._disable_dynamo
def linear_cross_entropy(hidden: Tensor, weight: Tensor, target: Tensor,
                         bias: Tensor | None = None, *, class_weight: Tensor | None = None,
                         ignore_index: int = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, z_loss: float = 0.0,
                         softcap: float | None = None,
                         chunk_size: int | None = None) -> Tensor:
    """cross_entropy(hidden @ weight.T + bias, target) with autograd to hidden, weight and
    bias, chunked over rows so the [N, V] logits never exist at once.

    hidden [..., H], weight [V, H] (as torch.nn.Linear, e.g. the LM head), target [...] class
    indices (any integer dtype), bias [V] or None; reduction 'mean' or 'sum'; the other
    arguments as cross_entropy (class_weight is its per-class `weight`). Forward computes the
    loss and all three gradients chunk by chunk (fastopt.losses.linear_cross_entropy with
    torch's GEMMs on CPU float32/float64, the same algorithm in torch ops elsewhere): peak extra
    memory is one [chunk_size, V] block besides the gradients (chunk_size defaults to at most
    128 MiB of logits and max(1024, N / 8) rows on CPU, the rows that fit 4M logits
    elsewhere). Under create_graph=True backward differentiates the unchunked torch
    composition instead (its memory).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    if hidden.dim() < 1 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"weight: expected shape [V, {hidden.shape[-1]}] for hidden of shape "
                         f"{list(hidden.shape)}, got {list(weight.shape)}")
    if target.shape != hidden.shape[:-1]:
        raise ValueError(f"target: expected shape {list(hidden.shape[:-1])} for hidden of "
                         f"shape {list(hidden.shape)}, got {list(target.shape)}")
    h, t = hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1)
    ce: dict[str, Any] = dict(weight=class_weight, ignore_index=ignore_index,
                              reduction=reduction, label_smoothing=label_smoothing,
                              z_loss=z_loss, softcap=softcap)
    inputs = (hidden, weight) if bias is None else (hidden, weight, bias)

    def torch_loss(hid: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        x = hid.reshape(-1, hid.shape[-1])
        return _torch_cross_entropy(x @ w.T if b is None else torch.addmm(b, x, w.T), t, **ce)

    fused = (_losses() is not None and all(map(_host_dense, (h, weight, bias, class_weight)))
             and len({x.dtype for x in (h, weight, bias, class_weight) if x is not None}) == 1
             and _host_dense(t, _INTS) and _no_grad_needed(target, class_weight))

    def run(return_grad: bool) -> Any:
        if not fused:
            return _linear_ce_chunks(h.detach(), weight.detach(), t,
                                     None if bias is None else bias.detach(), chunk_size,
                                     return_grad, ce)
        ce_np = {k: v for k, v in ce.items() if k != "weight"}
        out = _losses().linear_cross_entropy(
            h.detach(), weight.detach(), t, None if bias is None else bias.detach(),
            class_weight=class_weight, chunk_size=chunk_size, return_grad=return_grad, **ce_np)
        if not return_grad:
            return torch.tensor(out, dtype=h.dtype)
        return (torch.tensor(out[0], dtype=h.dtype), *out[1:])

    if not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs)):
        return run(False)

    def compute() -> tuple[Tensor, tuple[Tensor | None, ...]]:
        loss, gh, gw, gb = run(True)
        return loss, (gh.view(hidden.shape), gw, gb)[:len(inputs)]

    return _FusedLoss.apply(_Call(compute, torch_loss), *inputs)
