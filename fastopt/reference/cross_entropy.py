"""Softmax cross-entropy (torch.nn.functional.cross_entropy) with its gradient, in float64."""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def cross_entropy(logits: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                  softcap: float | None = None) -> tuple[float | np.ndarray, np.ndarray]:
    """Return (loss, d loss / d logits), the gradient in the logits' dtype.

    Over the class axis of x (shape [C], [N, C] or [N, C, d1, ...], class axis 1 as torch;
    target [], [N] or [N, d1, ...] indices or probabilities shaped like x), with
    s = cap tanh(x / cap) under soft-capping (Gemma 2) and s = x otherwise:
        logp = s - logsumexp(s)
        class index y (ignored when y == ignore_index), smoothing eps, class weights w:
            loss_i = (1 - eps) (-w_y logp_y) + eps / C (-sum_c w_c logp_c)
        probabilities q:  loss_i = -sum_c w_c ((1 - eps) q_c + eps / C) logp_c
        z-loss (PaLM, Chowdhery et al. 2022):  loss_i += z logsumexp(s)^2
    Reduction 'mean' divides by the sum of w_y over non-ignored rows (the number of rows for
    probabilities; NaN when every row is ignored, as torch), 'sum' adds, 'none' keeps loss_i.
    The gradient is that of the reduced loss; for 'none', of sum_i loss_i.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim > 2:  # rows are the positions outside the class axis: move it last
        c = x.shape[1]
        last = np.moveaxis(np.asarray(logits), 1, -1)
        t_in = np.asarray(target)
        t_rows = np.moveaxis(t_in, 1, -1).reshape(-1, c) if np.issubdtype(t_in.dtype, np.floating) \
            else t_in.reshape(-1)
        loss, grad = cross_entropy(last.reshape(-1, c), t_rows, weight, ignore_index, reduction,
                                   label_smoothing, z_loss=z_loss, softcap=softcap)
        if reduction == "none":
            loss = loss.reshape(last.shape[:-1])
        return loss, np.ascontiguousarray(np.moveaxis(grad.reshape(last.shape), -1, 1))
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    n, c = rows.shape
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    t_in = np.asarray(target)
    probs = np.issubdtype(t_in.dtype, np.floating)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s = softcap * np.tanh(rows / softcap) if softcap else rows
        m = np.max(s, axis=1, keepdims=True)
        lse = m + np.log(np.sum(np.exp(s - m), axis=1, keepdims=True))
        logp = s - lse
        softmax = np.exp(logp)
        if probs:
            q = t_in.astype(np.float64).reshape(n, c)
            t = w * ((1 - eps) * q + eps / c)
            loss_rows = -np.sum(t * logp, axis=1)
            counted = np.ones(n, dtype=bool)
            denom = float(n)
        else:
            y = t_in.astype(np.int64).reshape(n)
            counted = y != ignore_index
            yc = np.where(counted, y, 0)
            t = np.zeros((n, c))
            t[np.arange(n), yc] = (1 - eps) * w[yc]
            t += eps / c * w
            nll = -w[yc] * logp[np.arange(n), yc]
            loss_rows = (1 - eps) * nll
            if eps > 0:
                loss_rows = loss_rows + eps / c * -np.sum(w * logp, axis=1)
            denom = float(np.sum(w[yc][counted]))
        loss_rows = loss_rows + z_loss * lse[:, 0] ** 2
        grad = softmax * (np.sum(t, axis=1, keepdims=True) + 2 * z_loss * lse) - t
        if softcap:
            grad = grad * (1 - (s / softcap) ** 2)
        loss_rows = np.where(counted, loss_rows, 0.0)
        if reduction == "mean":
            loss = np.sum(loss_rows) / denom
            grad = grad / denom
        elif reduction == "sum":
            loss = np.sum(loss_rows)
        elif reduction == "none":
            loss = loss_rows.reshape(x.shape[:-1])
        else:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
        grad = np.where(counted[:, None], grad, 0.0)  # ignored rows: 0, even when denom is 0
    dtype = np.asarray(logits).dtype
    grad = grad.reshape(x.shape).astype(dtype)
    if reduction == "none":
        return np.asarray(loss).astype(dtype), grad
    return float(np.asarray(loss).astype(dtype)), grad


def linear_cross_entropy(hidden: np.ndarray, weight: np.ndarray, target: np.ndarray,
                         bias: np.ndarray | None = None, **kwargs) -> tuple:
    """The unfused composition: logits = hidden @ weight.T + bias, then cross_entropy.

    Returns (loss, grad_hidden, grad_weight, grad_bias or None), with
        grad_hidden = dlogits @ weight,  grad_weight = dlogits.T @ hidden,
        grad_bias = sum over rows of dlogits.
    """
    h = np.asarray(hidden, dtype=np.float64)
    wt = np.asarray(weight, dtype=np.float64)
    logits = h @ wt.T
    if bias is not None:
        logits = logits + np.asarray(bias, dtype=np.float64)
    class_weight = kwargs.pop("class_weight", None)
    loss, dlogits = cross_entropy(logits, target, class_weight, **kwargs)
    gh = (dlogits @ wt).astype(hidden.dtype)
    gw = (dlogits.T @ h).astype(weight.dtype)
    gb = None if bias is None else dlogits.sum(axis=0).astype(bias.dtype)
    if isinstance(loss, np.ndarray):
        loss = loss.astype(hidden.dtype)
    return loss, gh, gw, gb
