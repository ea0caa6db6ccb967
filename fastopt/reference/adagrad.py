import numpy as np

from ._io import f64, store


def adagrad(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, step: int,
            lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            eps: float = 1e-10, maximize: bool = False) -> None:
    """One Adagrad step, in place (torch.optim.Adagrad).

        g = -g if maximize else g
        g = g + weight_decay * p            (if weight_decay != 0)
        clr = lr / (1 + (step - 1) * lr_decay)
        s = s + g^2
        p = p - clr * g / (sqrt(s) + eps)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """
    p, g, s = f64(param, grad, state_sum)
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    s = s + g * g
    store(state_sum, s)
    store(param, p - clr * (g / (np.sqrt(s) + eps)))
