import numpy as np

from ._io import f64, store


def lion(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, *, lr: float = 1e-4,
         beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
         maximize: bool = False) -> None:
    """One Lion step, in place.

        g = -g if maximize else g
        p = p * (1 - lr * weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    p, g, m = f64(param, grad, exp_avg)
    if maximize:
        g = -g
    p = p * (1 - lr * weight_decay)
    p = p - lr * np.sign(beta1 * m + (1 - beta1) * g)
    store(param, p)
    store(exp_avg, beta2 * m + (1 - beta2) * g)
