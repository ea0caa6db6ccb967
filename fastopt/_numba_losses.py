"""The losses for the Numba backends: per-element and per-class rules written once as plain
Python scalar functions, compiled with @njit into the `numba` CPU backend's kernels below and
with numba.cuda.jit(device=True) in fastopt._numba_cuda_losses (which sweeps a cross-entropy
row over a block's threads, where ce_row below sweeps it in one loop). Imported only when a
Numba backend first computes a loss.

The rules follow csrc/include/fastopt/rules/{elementwise_loss,cross_entropy}.h and compute in
float64 whatever the storage dtype (the values are rounded to it when stored). Every reduction
has a fixed order: an element-wise loss sums fixed chunks of CHUNK elements sequentially and
the host adds the chunk sums exactly (math.fsum); a cross-entropy row is one sequential loop
per sweep and the host adds the rows. The bits therefore do not depend on the thread count.

Cross-entropy, written as one target distribution t over the C classes (w = 1 without class
weights, eps = label smoothing):
    class index y:   t_c = (1 - eps) w_y [c == y] + (eps / C) w_c
    probabilities p: t_c = w_c ((1 - eps) p_c + eps / C)
with s = cap tanh(x / cap) under soft-capping, m = max_c s_c, S = sum_c exp(s_c - m),
A = sum_c t_c, lse = m + log S:
    loss = A log S - sum_c t_c (s_c - m) + z lse^2
    dloss/dx_j = (softmax_j (A + 2 z lse) - t_j) (1 - (s_j / cap)^2 under soft-capping)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: numbered as csrc/include/fastopt/rules/elementwise_loss.h
KINDS = {"mse": 0, "l1": 1, "huber": 2, "smooth_l1": 3, "bce": 4, "bce_logits": 5,
         "kl_div": 6, "kl_div_log_target": 7}
CHUNK = 1 << 14  # elements per partial sum of an element-wise loss
BCE_TINY = float(np.float32(1e-12))  # torch clamps x (1 - x) at the float 1e-12


def point_loss(kind, x, y, param, pw):
    """(loss, dloss/dx) of one element, in float64; pw is the positive-class weight."""
    if kind == 0:  # mse
        d = x - y
        return d * d, 2.0 * d
    if kind == 1:  # l1; sign(NaN) is NaN
        d = x - y
        s = d if d != d else (1.0 if d > 0 else (-1.0 if d < 0 else 0.0))
        return abs(d), s
    if kind == 2:  # huber
        d = x - y
        ad = abs(d)
        loss = 0.5 * d * d if ad < param else param * (ad - 0.5 * param)
        return loss, (-param if d < -param else (param if d > param else d))
    if kind == 3:  # smooth_l1
        d = x - y
        ad = abs(d)
        loss = 0.5 * d * d / param if ad < param else ad - 0.5 * param
        return loss, (-1.0 if d < -param else (1.0 if d > param else d / param))
    if kind == 4:  # bce on probabilities; NaN loss outside [0, 1] (the caller raises)
        if not (x >= 0.0 and x <= 1.0 and y >= 0.0 and y <= 1.0):
            return math.nan, math.nan
        lx = math.log(x) if x > 0.0 else -100.0
        l1x = math.log1p(-x) if x < 1.0 else -100.0
        loss = -(y * max(lx, -100.0) + (1.0 - y) * max(l1x, -100.0))
        v = x * (1.0 - x)
        return loss, (x - y) / (v if v > BCE_TINY else BCE_TINY)
    if kind == 5:  # bce_logits: (1 - y) x + l max(-x, 0) regrouped so nothing cancels
        e = math.exp(-abs(x))
        lw = (pw - 1.0) * y + 1.0
        loss = ((1.0 - y) * x if x >= 0.0 else -pw * y * x) + lw * math.log1p(e)
        sig = (1.0 if x >= 0.0 else e) / (1.0 + e)
        return loss, lw * sig - pw * y
    if kind == 6:  # kl_div
        return (0.0 if y == 0.0 else y * math.log(y)) - y * x, -y
    ey = math.exp(y)  # kl_div_log_target
    return ey * (y - x), -ey


def element_rule(point_loss):
    """Element i of an element-wise loss, built on a backend's compiled point_loss (closures
    over it compile with @njit and with cuda.jit(device=True)): writes scale w dloss/dx to
    grad (has_g) and w loss to out (has_out), returns w loss. w and the positive-class weight
    pw repeat every wp and pp elements (0: absent)."""

    def element(i, x, kind, y, w, wp, pw, pp, grad, has_g, out, has_out, param, scale):
        p = float(pw[i % pp]) if pp > 0 else 1.0
        loss, d = point_loss(kind, float(x[i]), float(y[i]), param, p)
        if wp > 0:
            wv = float(w[i % wp])
            loss *= wv
            d *= wv
        if has_g:
            grad[i] = scale * d
        if has_out:
            out[i] = loss
        return loss

    return element


def capped(v, cap):
    """Soft-capping, s = cap tanh(v / cap); v itself without a cap (cap 0)."""
    return cap * math.tanh(v / cap) if cap > 0.0 else v


def ce_class_grad(s, m, coef, scale, t, cap):
    """dloss/dx_j of class j from its capped logit s and target weight t:
    e^(s - m) coef - scale t, times 1 - (s / cap)^2 under soft-capping, where
    coef = scale (A + 2 z lse) / S."""
    gj = math.exp(s - m) * coef - scale * t
    if cap > 0.0:
        r = s / cap
        gj *= 1.0 - r * r
    return gj


# --- host side, shared by both Numba backends ------------------------------------------------


def ce_prepare(target, weight, n, c, ignore_index, reduction):
    """Checks class indices and finds 'mean''s denominator before any kernel writes:
    (bad row or -1, denom, scale, wsum, probs)."""
    probs = target.dtype.kind == "f"
    if probs:
        denom = float(n)
    else:
        t = target.astype(np.int64, copy=False)
        counted = t != ignore_index
        bad = np.nonzero(counted & ((t < 0) | (t >= c)))[0]
        if bad.size:
            return int(bad[0]), 0.0, 1.0, 0.0, probs
        denom = float(np.sum(weight.astype(np.float64)[t[counted]])) if weight is not None \
            else float(np.count_nonzero(counted))
    wsum = float(np.sum(weight, dtype=np.float64)) if weight is not None else float(c)
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / denom if denom else math.inf
    return -1, denom, scale, wsum, probs


# --- the `numba` backend's kernels: compiled, or loaded from Numba's on-disk cache, on first call

rule = njit(cache=True, error_model="numpy")
_element = rule(element_rule(rule(point_loss)))
_capped = rule(capped)
_ce_class_grad = rule(ce_class_grad)
kernel = njit(parallel=True, cache=True, error_model="numpy")


@rule
def ce_row(x, tidx, probs, tprob, w, has_w, wsum, g, has_g, i, c, inner, ignore_index, eps, z,
           cap, scale):
    """Row i's loss, writing its gradient when has_g (ignored rows: loss 0, gradient 0; a NaN
    or infinite logit: NaN loss and gradient). Row i starts at (i // inner) c inner + i % inner
    of [n / inner, c, inner] logits (inner = 1: [n, c]); its classes are inner apart. x may be
    g: every element is read before it is written. Sequential sweeps over the classes; the
    `numba_cuda` kernel runs the same sweeps over a block's threads."""
    base = (i // inner) * c * inner + i % inner
    y = 0
    if not probs:
        y = tidx[i]
        if y == ignore_index:
            if has_g:
                for j in range(c):
                    g[base + j * inner] = 0.0
            return 0.0
    keep = 1.0 - eps
    spread = eps / c
    m = -math.inf
    for j in range(c):
        s = _capped(float(x[base + j * inner]), cap)
        if s > m or s != s:
            m = s
        if m != m:
            break
    if not (m > -math.inf and m < math.inf):
        if has_g:
            for j in range(c):
                g[base + j * inner] = math.nan
        return math.nan
    wy = 0.0
    if not probs:
        wy = w[y] if has_w else 1.0
    big_s = 0.0
    a = 0.0
    tx = 0.0
    for j in range(c):
        k = base + j * inner
        s = _capped(float(x[k]), cap)
        big_s += math.exp(s - m)
        wj = w[j] if has_w else 1.0
        if probs:
            t = wj * (keep * tprob[k] + spread)
            a += t
            tx += t * (s - m)
        elif spread > 0.0:
            tx += spread * wj * (s - m)
    if not probs:
        a = keep * wy + spread * wsum
        tx += keep * wy * (_capped(float(x[base + y * inner]), cap) - m)
    lse = m + math.log(big_s)
    if has_g:
        coef = scale * (a + 2.0 * z * lse) / big_s
        for j in range(c):
            k = base + j * inner
            wj = w[j] if has_w else 1.0
            if probs:
                t = wj * (keep * tprob[k] + spread)
            else:
                t = spread * wj + (keep * wy if j == y else 0.0)
            g[k] = _ce_class_grad(_capped(float(x[k]), cap), m, coef, scale, t, cap)
    return a * math.log(big_s) - tx + z * lse * lse


@kernel
def elementwise(x, kind, y, w, wp, pw, pp, grad, has_g, out, has_out, param, scale, partials):
    """Chunk ch of CHUNK elements: writes scale w dloss/dx and (has_out) w loss, and its loss
    sum, added in element order, to partials[ch]."""
    n = x.size
    for ch in prange(partials.size):
        acc = 0.0
        for i in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            acc += _element(i, x, kind, y, w, wp, pw, pp, grad, has_g, out, has_out, param,
                            scale)
        partials[ch] = acc


@kernel
def cross_entropy(x, tidx, probs, tprob, w, has_w, wsum, grad, has_g, n, c, inner,
                  ignore_index, eps, z, cap, scale, rows):
    for i in prange(n):
        rows[i] = ce_row(x, tidx, probs, tprob, w, has_w, wsum, grad, has_g, i, c, inner,
                         ignore_index, eps, z, cap, scale)
