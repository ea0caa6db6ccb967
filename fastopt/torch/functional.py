"""``torch.nn.functional`` losses as autograd functions over fastopt's fused loss kernels.

Same signatures, defaults and results as ``torch.nn.functional``. The forward pass calls the
fused kernel (``fastopt.losses``), which computes the loss and its gradient with respect to the
input in one pass over memory; the gradient is kept for backward, so ``loss.backward()`` costs a
scale by the incoming gradient (nothing at all when that is 1, as for ``loss.backward()`` on a
reduced loss). When the input does not require a gradient only the loss is computed.

Inputs the kernels do not take go to ``torch.nn.functional`` itself, with identical results:
tensors off the CPU or not float32/float64 or not contiguous, a target or weight that requires
grad, K-dimensional cross-entropy, ``weight=`` of mse/l1/huber, and anything the kernels'
validation refuses (torch then raises its own error for input it refuses too). The fused path's
backward is not itself differentiable (no double backward).

In-place cross-entropy (``inplace=True``, a fastopt extra) writes the gradient over the logits
instead of allocating one, saving the logits-sized buffer. It is allowed only on a non-leaf
logits tensor that requires grad (what the LM head's matmul produces, or a view of it), never on
a leaf, a view of a leaf (a parameter) or user data. The logits' version counter is bumped, so
if any autograd node saved the logits (or a view sharing their memory) for its own backward,
e.g. ``tanh`` before the loss, ``backward()`` raises torch's "modified by an inplace operation"
error instead of using wrong values. After the call the logits tensor holds the gradient: do
not read it as logits any more (compute accuracy and the like before the loss).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import _reduction

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "mse_loss", "smooth_l1_loss"]

_FLOATS = (torch.float32, torch.float64)
_INDEX = (torch.int32, torch.int64)
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


class _FusedLoss(torch.autograd.Function):
    """loss = kernel(input, ...); d loss / d input saved by the kernel, scaled in backward."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, compute: Callable[[], tuple[Any, Tensor]],
                rowwise: bool) -> Tensor:
        loss, grad = compute()
        # saved (not a ctx attribute) so autograd frees it right after backward: a leaf's
        # AccumulateGrad can then take the tensor as .grad instead of copying it
        ctx.save_for_backward(grad)
        ctx.rowwise = rowwise
        if not isinstance(loss, Tensor):
            loss = torch.tensor(loss, dtype=input.dtype)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (g,) = ctx.saved_tensors
        if grad_out.dim() == 0:
            scale = float(grad_out)
            return (g if scale == 1.0 else g * scale), None, None
        return g * (grad_out.unsqueeze(-1) if ctx.rowwise else grad_out), None, None


def _run(name: str, input: Tensor, fused_args: tuple, fused_kwargs: dict[str, Any],
         fallback: Callable[[], Tensor], *, rowwise: bool = False,
         inplace: bool = False) -> Tensor:
    """The fused kernel when it takes these tensors, else torch's own function."""
    fn = getattr(_losses(), name, None)
    if fn is None:
        return fallback()
    needs_grad = torch.is_grad_enabled() and input.requires_grad
    try:
        if not needs_grad:
            loss = fn(input.detach(), *fused_args, return_grad=False, **fused_kwargs)
            return loss if isinstance(loss, Tensor) else torch.tensor(loss, dtype=input.dtype)
        if inplace:
            fused_kwargs = {**fused_kwargs, "inplace": True}

        def compute() -> tuple[Any, Tensor]:
            loss, grad = fn(input.detach(), *fused_args, return_grad=True, **fused_kwargs)
            if inplace:
                # tell autograd the logits' memory changed: a node that saved them raises
                torch.autograd.graph.increment_version(input)
            return loss, grad

        return _FusedLoss.apply(input, compute, rowwise)
    except (TypeError, ValueError):
        # the kernel refuses these arguments: torch computes them (or raises its own error)
        return fallback()


def _reduction_of(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return _reduction.legacy_get_string(size_average, reduce)
    return reduction


@torch._disable_dynamo
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, inplace: bool = False, z_loss: float = 0.0,
                  softcap: float | None = None) -> Tensor:
    """Softmax cross-entropy over the class axis, as torch.nn.functional.cross_entropy (class
    indices or class probabilities as target, per-class weight, ignore_index, label smoothing
    (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016)). With logp =
    log_softmax(x) and eps = label_smoothing:

        index y:          loss_i = (1 - eps) (-w_y logp_y) + eps / C (-sum_c w_c logp_c)
        probabilities q:  loss_i = -sum_c w_c ((1 - eps) q_c + eps / C) logp_c
        d loss_i / d x = softmax(x) * sum_c(coefficients) - coefficients

    Keyword-only extras (fused path only): inplace=True writes the gradient over input (see
    the module docstring for when that is allowed); z_loss adds z * logsumexp(x)^2 per counted
    row (PaLM, Chowdhery et al. 2022); softcap replaces x by cap * tanh(x / cap) (Gemma 2).
    """
    reduction = _reduction_of(size_average, reduce, reduction)
    extras = z_loss != 0.0 or softcap is not None

    def fallback() -> Tensor:
        if extras:
            raise ValueError("z_loss and softcap need the fused kernel: CPU float32/float64 "
                             "contiguous logits [N, C] or [C] (and fastopt.losses)")
        return TF.cross_entropy(input, target, weight, ignore_index=ignore_index,
                                reduction=reduction, label_smoothing=label_smoothing)

    if inplace:
        if not (torch.is_grad_enabled() and input.requires_grad):
            raise ValueError("inplace=True writes the gradient over input for backward, but "
                             "input does not require grad here (call without inplace)")
        base = input if input._base is None else input._base
        if base.is_leaf:
            raise ValueError("inplace=True: input is a leaf tensor or a view of one; the "
                             "gradient may only overwrite a non-leaf activation (e.g. the "
                             "output of a matmul)")
    fusable = (input.dim() in (1, 2) and _host_dense(input) and _host_dense(weight)
               and _no_grad_needed(target, weight)
               and (_host_dense(target, _INDEX) or _host_dense(target)))
    if not fusable:
        return fallback()
    kwargs: dict[str, Any] = dict(weight=weight, ignore_index=ignore_index,
                                  reduction=reduction, label_smoothing=label_smoothing)
    if z_loss != 0.0:
        kwargs["z_loss"] = z_loss
    if softcap is not None:
        kwargs["softcap"] = softcap
    return _run("cross_entropy", input, (target,), kwargs, fallback,
                rowwise=reduction == "none" and input.dim() == 2, inplace=inplace)


def _elementwise(name: str, input: Tensor, target: Tensor, fallback: Callable[[], Tensor],
                 kwargs: dict[str, Any], extra: tuple[Any, ...] = ()) -> Tensor:
    if not (isinstance(input, Tensor) and isinstance(target, Tensor)
            and input.shape == target.shape and all(map(_host_dense, (input, target, *extra)))
            and _no_grad_needed(target, *extra)):
        return fallback()
    return _run(name, input, (target,), kwargs, fallback)


@torch._disable_dynamo
def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Mean squared error, loss = (x - y)^2, d loss / dx = 2 (x - y); as
    torch.nn.functional.mse_loss (weight= goes to torch)."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.mse_loss(input, target, reduction=reduction, weight=weight)

    if weight is not None:
        return fallback()
    return _elementwise("mse_loss", input, target, fallback, dict(reduction=reduction))


@torch._disable_dynamo
def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """Mean absolute error, loss = |x - y|, d loss / dx = sign(x - y); as
    torch.nn.functional.l1_loss (weight= goes to torch)."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.l1_loss(input, target, reduction=reduction, weight=weight)

    if weight is not None:
        return fallback()
    return _elementwise("l1_loss", input, target, fallback, dict(reduction=reduction))


@torch._disable_dynamo
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """Huber loss (Huber, "Robust Estimation of a Location Parameter", 1964), d = x - y:
    d^2 / 2 where |d| < delta, else delta (|d| - delta / 2); as
    torch.nn.functional.huber_loss (weight= goes to torch)."""

    def fallback() -> Tensor:
        return TF.huber_loss(input, target, reduction=reduction, delta=delta, weight=weight)

    if weight is not None:
        return fallback()
    return _elementwise("huber_loss", input, target, fallback,
                        dict(reduction=reduction, delta=delta))


@torch._disable_dynamo
def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Smooth L1 (Girshick, "Fast R-CNN", ICCV 2015), d = x - y: d^2 / (2 beta) where
    |d| < beta, else |d| - beta / 2; as torch.nn.functional.smooth_l1_loss."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.smooth_l1_loss(input, target, reduction=reduction, beta=beta)

    return _elementwise("smooth_l1_loss", input, target, fallback,
                        dict(reduction=reduction, beta=beta))


@torch._disable_dynamo
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on probabilities, loss = -w (y log x + (1 - y) log(1 - x)) with
    each log clamped at -100; as torch.nn.functional.binary_cross_entropy."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.binary_cross_entropy(input, target, weight, reduction=reduction)

    return _elementwise("binary_cross_entropy", input, target, fallback,
                        dict(weight=weight, reduction=reduction), (weight,))


@torch._disable_dynamo
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross-entropy in the numerically stable form, with l = 1 + (p - 1) y
    (p = pos_weight): loss = w ((1 - y) x + l (log(1 + e^-|x|) + max(-x, 0))); as
    torch.nn.functional.binary_cross_entropy_with_logits."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                   pos_weight=pos_weight)

    return _elementwise("binary_cross_entropy_with_logits", input, target, fallback,
                        dict(weight=weight, reduction=reduction, pos_weight=pos_weight),
                        (weight, pos_weight))


@torch._disable_dynamo
def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None,
           reduce: bool | None = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence with input holding log-probabilities: loss = y (log y - x)
    (log_target: e^y (y - x)); 'batchmean' divides the sum by the batch size; as
    torch.nn.functional.kl_div."""
    reduction = _reduction_of(size_average, reduce, reduction)

    def fallback() -> Tensor:
        return TF.kl_div(input, target, reduction=reduction, log_target=log_target)

    return _elementwise("kl_div", input, target, fallback,
                        dict(reduction=reduction, log_target=log_target))
