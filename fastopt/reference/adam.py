import numpy as np

from ._io import f64, store


def adam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
         max_exp_avg_sq: np.ndarray | None = None, *, step: int, lr: float = 1e-3,
         beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
         decoupled: bool = False, amsgrad: bool = False, maximize: bool = False,
         bias_correction: bool = True, eps_inside_sqrt: bool = False) -> None:
    """One Adam (decoupled=False) or AdamW (decoupled=True) step, in place.

        g = -g if maximize else g
        g = g + weight_decay * p            (Adam, L2 penalty, if weight_decay != 0)
        p = p * (1 - lr * weight_decay)     (AdamW, decoupled decay, if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v); v = v_max    (AMSGrad)
        bc1 = 1 - beta1^step, bc2 = 1 - beta2^step   (both 1 if not bias_correction)
        p = p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
        p = p - lr / bc1 * m / sqrt(v / bc2 + eps)   (eps_inside_sqrt)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Loshchilov & Hutter,
    "Decoupled Weight Decay Regularization", ICLR 2019; Reddi et al., "On the Convergence of
    Adam and Beyond", ICLR 2018 (AMSGrad).
    """
    p, g, m, v, v_max = f64(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    store(exp_avg, m)
    store(exp_avg_sq, v)
    if amsgrad:
        v = np.maximum(v_max, v)
        store(max_exp_avg_sq, v)
    bc1 = 1 - beta1**step if bias_correction else 1.0
    bc2 = 1 - beta2**step if bias_correction else 1.0
    if eps_inside_sqrt:
        denom = np.sqrt(v / bc2 + eps)
    else:
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
    store(param, p - lr / bc1 * (m / denom))
