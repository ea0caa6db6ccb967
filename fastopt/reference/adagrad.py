import numpy as np

from ._io import direction, f64, proximal, store


def adagrad(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, step: int,
            lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            eps: float = 1e-10, maximize: bool = False, l1: float = 0.0,
            l1_mode: str = "coupled") -> None:
    """One Adagrad step, in place (torch.optim.Adagrad).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (if weight_decay != 0)
        clr = lr / (1 + (step - 1) * lr_decay)
        s = s + g^2
        p = p - clr * g / (sqrt(s) + eps)
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io; lr, not clr)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """
    p, g, s = f64(param, grad, state_sum)
    g = direction(g, p, maximize, l1, l1_mode)
    if weight_decay != 0:
        g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    s = s + g * g
    store(state_sum, s)
    p = p - clr * (g / (np.sqrt(s) + eps))
    store(param, proximal(p, lr, l1, l1_mode))
