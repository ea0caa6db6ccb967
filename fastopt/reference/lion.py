import numpy as np

from ._io import direction, f64, proximal, store


def lion(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, *, lr: float = 1e-4,
         betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
         maximize: bool = False, l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One Lion step, in place (math in float64 for every storage dtype).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        p = p * (1 - lr * weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io)

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    beta1, beta2 = betas
    p, g, m = f64(param, grad, exp_avg)
    g = direction(g, p, maximize, l1, l1_mode)
    p = p * (1 - lr * weight_decay)
    p = p - lr * np.sign(beta1 * m + (1 - beta1) * g)
    store(exp_avg, beta2 * m + (1 - beta2) * g)
    store(param, proximal(p, lr, l1, l1_mode))
