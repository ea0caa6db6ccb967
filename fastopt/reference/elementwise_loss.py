"""Element-wise losses of torch.nn.functional with their gradients, in float64.

Each function returns (loss, d loss / d input), the gradient in the input's dtype. Reduction
'mean' averages over every element, 'sum' adds, 'none' keeps the element losses (the gradient
is then that of their sum); kl_div also takes 'batchmean' (sum / input.shape[0]).
"""

from __future__ import annotations

import numpy as np

from ._io import f64


def _reduce(loss: np.ndarray, grad: np.ndarray, reduction: str, like: np.ndarray,
            batchmean: bool = False) -> tuple[float | np.ndarray, np.ndarray]:
    dtype = np.asarray(like).dtype
    if reduction == "mean":
        total, grad = np.sum(loss) / max(loss.size, 1), grad / max(loss.size, 1)
        if loss.size == 0:
            total = np.nan
    elif reduction == "batchmean" and batchmean:
        batch = loss.shape[0] if loss.ndim else 1
        total, grad = np.sum(loss) / batch, grad / batch
    elif reduction == "sum":
        total = np.sum(loss)
    elif reduction == "none":
        return loss.astype(dtype), grad.astype(dtype)
    else:
        raise ValueError(f"reduction: unknown value {reduction!r}")
    return float(np.asarray(total).astype(dtype)), grad.astype(dtype)


def mse_loss(input, target, reduction: str = "mean"):
    """loss = (x - y)^2;  dloss/dx = 2 (x - y)."""
    x, y = f64(input, target)
    return _reduce((x - y) ** 2, 2 * (x - y), reduction, input)


def l1_loss(input, target, reduction: str = "mean"):
    """loss = |x - y|;  dloss/dx = sign(x - y)."""
    x, y = f64(input, target)
    return _reduce(np.abs(x - y), np.sign(x - y), reduction, input)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """loss = d^2 / 2 if |d| < delta else delta (|d| - delta / 2), d = x - y (Huber 1964);
    dloss/dx = clamp(d, -delta, delta)."""
    x, y = f64(input, target)
    d = x - y
    loss = np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
    return _reduce(loss, np.clip(d, -delta, delta), reduction, input)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """loss = d^2 / (2 beta) if |d| < beta else |d| - beta / 2 (Girshick 2015, Fast R-CNN);
    dloss/dx = d / beta inside, sign(d) outside; beta = 0 is l1_loss."""
    if beta == 0:
        return l1_loss(input, target, reduction)
    x, y = f64(input, target)
    d = x - y
    loss = np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
    grad = np.where(d < -beta, -1.0, np.where(d > beta, 1.0, d / beta))
    return _reduce(loss, grad, reduction, input)


def check_probabilities(input, target) -> None:
    """Raise ValueError naming the first element of input, then of target, outside [0, 1]
    (NaN included): torch's binary_cross_entropy refuses them."""
    for name, a in (("input", input), ("target", target)):
        a = np.asarray(a)
        bad = ~((a >= 0) & (a <= 1))
        if np.any(bad):
            i = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
            where = f" at index {list(map(int, i))}" if a.ndim else ""
            what = "probabilities" if name == "input" else "targets"
            raise ValueError(f"{name}: binary_cross_entropy needs {what} in [0, 1], got "
                             f"{a[i]}{where}")


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """loss = -w (y max(log x, -100) + (1 - y) max(log(1 - x), -100));
    dloss/dx = w (x - y) / max(x (1 - x), 1e-12)  (torch's clamps; its 1e-12 is a float32).
    x and y must lie in [0, 1] (ValueError otherwise, as torch raises)."""
    check_probabilities(input, target)
    x, y, w = f64(input, target, weight)
    w = 1.0 if w is None else w
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -(y * np.maximum(np.log(x), -100) + (1 - y) * np.maximum(np.log1p(-x), -100))
    grad = (x - y) / np.maximum(x * (1 - x), float(np.float32(1e-12)))
    return _reduce(w * loss, w * grad, reduction, input)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None):
    """With l = (p - 1) y + 1 (p = pos_weight, 1 when absent), in the stable form:
        loss = w ((1 - y) x + l (log(1 + e^-|x|) + max(-x, 0)))
        dloss/dx = w (l sigmoid(x) - p y)
    """
    x, y, w, p = f64(input, target, weight, pos_weight)
    w = 1.0 if w is None else w
    p = 1.0 if p is None else p
    lw = (p - 1) * y + 1
    loss = (1 - y) * x + lw * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))
    sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) /
                   (1 + np.exp(-np.abs(x))))
    grad = lw * sig - p * y
    return _reduce(w * loss, w * grad, reduction, input)


def kl_div(input, target, reduction: str = "mean", log_target: bool = False):
    """input holds log-probabilities. loss = xlogy(y, y) - y x, dloss/dx = -y; with
    log_target: loss = e^y (y - x), dloss/dx = -e^y (torch.nn.functional.kl_div)."""
    x, y = f64(input, target)
    if log_target:
        loss, grad = np.exp(y) * (y - x), -np.exp(y)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = np.where(y == 0, 0.0, y * np.log(np.where(y == 0, 1.0, y))) - y * x
        grad = -y
    return _reduce(loss, grad, reduction, input, batchmean=True)
