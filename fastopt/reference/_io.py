"""float64 in, storage dtype out: the two halves of every reference function; and the two
halves of L1 regularization that every optimizer shares.

L1 (a penalty l1 * sum |p|) comes in two modes:

    coupled   g = g + l1 * sign(p)                  before the op's own weight decay
              (the subgradient of l1 |p| with sign(0) = 0, as weight_decay is for L2)
    proximal  p = sign(p) * max(|p| - lr * l1, 0)   after the op's update
              (soft threshold: the proximal step of l1 |p|, which makes exact zeros)

Proximal (forward-backward) splitting: Duchi & Singer, "Efficient Online and Batch Learning
Using Forward Backward Splitting", JMLR 2009; Tsuruoka, Tsujii & Ananiadou, "Stochastic
Gradient Descent Training for L1-regularized Log-linear Models with Cumulative Penalty",
ACL 2009.
"""

import math
import numbers

import numpy as np

L1_MODES = ("coupled", "proximal")


def f64(*arrays):
    return tuple(None if a is None else np.asarray(a, dtype=np.float64) for a in arrays)


def store(dst: np.ndarray, value: np.ndarray) -> None:
    dst[...] = value.astype(dst.dtype)


def check_l1(l1, l1_mode) -> None:
    """TypeError / ValueError naming the argument unless l1 >= 0 is finite and l1_mode is one
    of L1_MODES."""
    if isinstance(l1, bool) or not isinstance(l1, numbers.Real):
        raise TypeError(f"l1: expected a real number, got {type(l1).__name__}")
    if not (math.isfinite(l1) and l1 >= 0):
        raise ValueError(f"l1: expected a finite value >= 0, got {l1!r}")
    if l1_mode not in L1_MODES:
        raise ValueError(f"l1_mode: expected one of {L1_MODES}, got {l1_mode!r}")


def direction(g: np.ndarray, p: np.ndarray, maximize: bool, l1: float,
              l1_mode: str) -> np.ndarray:
    """The gradient every op starts from (checks l1 first, so a bad value writes nothing):

        g = -g if maximize else g
        g = g + l1 * sign(p)          (coupled L1; sign(0) = 0, sign(NaN) = NaN)
    """
    check_l1(l1, l1_mode)
    if maximize:
        g = -g
    if l1 != 0 and l1_mode == "coupled":
        g = g + l1 * np.sign(p)
    return g


def weight_decay_step(g: np.ndarray, p: np.ndarray, lr: float, weight_decay: float,
                      decoupled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(g, p) after weight decay, L2 or decoupled (Loshchilov & Hutter, ICLR 2019):

        g = g + weight_decay * p            (L2)
        p = p * (1 - lr * weight_decay)     (decoupled)
    """
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    return g, p


def moments(g: np.ndarray, m: np.ndarray, v: np.ndarray, betas: tuple[float, float],
            exp_avg: np.ndarray, exp_avg_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The moments of every Adam variant, stored in exp_avg and exp_avg_sq:

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
    """
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    store(exp_avg, m)
    store(exp_avg_sq, v)
    return m, v


def proximal(p: np.ndarray, lr: float, l1: float, l1_mode: str) -> np.ndarray:
    """The last line of every op:  p = sign(p) * max(|p| - lr * l1, 0)  (proximal L1)."""
    if l1 != 0 and l1_mode == "proximal":
        return np.sign(p) * np.maximum(np.abs(p) - lr * l1, 0.0)
    return p
