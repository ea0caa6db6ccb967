"""Loss inputs shared by the GPU-side checks (tests/numba_cuda_losses_sim_check.py,
benchmarks/gpu_check.py): every element-wise loss with the options they test, and inputs in
each loss's domain drawn from a caller's generator."""

from __future__ import annotations

import numpy as np

#: loss name (numbered as fastopt._numba_losses.KINDS) -> (the function's name in fastopt.losses
#: and fastopt.reference, its keyword arguments)
ELEMENTWISE = {
    "mse": ("mse_loss", {}),
    "l1": ("l1_loss", {}),
    "huber": ("huber_loss", dict(delta=0.7)),
    "smooth_l1": ("smooth_l1_loss", dict(beta=0.5)),
    "bce": ("binary_cross_entropy", {}),
    "bce_logits": ("binary_cross_entropy_with_logits", {}),
    "kl_div": ("kl_div", {}),
    "kl_div_log_target": ("kl_div", dict(log_target=True)),
}

#: the cross-entropy options both the fastopt and the reference function take
CE_KWARGS = ("label_smoothing", "z_loss", "softcap")


def elementwise_inputs(rng: np.random.Generator, name: str, shape: tuple, dtype):
    """(input, target, weights) for loss `name`: probabilities for bce, probability targets
    for bce_logits and kl_div, log-probabilities as kl_div's input, normal values otherwise;
    weights (a dict of keyword arguments) over the last axis where the loss takes them: bce's
    weight, bce_logits' weight and pos_weight."""
    x, y = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    if name == "bce":
        x, y = rng.random(shape), rng.random(shape)
    elif name in ("bce_logits", "kl_div"):
        y = rng.random(shape)
    if name == "kl_div":
        x = np.log(rng.random(shape) + 1e-3)
    weights = {}
    if name in ("bce", "bce_logits"):
        weights["weight"] = rng.random(shape[-1]) + 0.5
    if name == "bce_logits":
        weights["pos_weight"] = rng.random(shape[-1]) * 3
    return x.astype(dtype), y.astype(dtype), {k: v.astype(dtype) for k, v in weights.items()}


def ce_inputs(rng: np.random.Generator, shape: tuple, dtype, opts: dict,
              index_dtype=np.int64, ignore_every: int = 3):
    """(logits [n, c], target, class weight or None, keyword arguments) for cross-entropy
    with `opts`: probs (probability targets, else class indices of index_dtype), ignore
    (every ignore_every-th row's index -100), weight (class weights), and CE_KWARGS passed
    on."""
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if opts.get("probs"):
        p = rng.random(shape)
        t = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        t = rng.integers(0, c, n).astype(index_dtype)
        if opts.get("ignore"):
            t[::ignore_every] = -100
    w = (rng.random(c) + 0.5).astype(dtype) if opts.get("weight") else None
    return x, t, w, {k: v for k, v in opts.items() if k in CE_KWARGS}
