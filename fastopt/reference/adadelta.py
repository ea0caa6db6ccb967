import numpy as np

from ._io import direction, f64, proximal, store


def adadelta(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
             acc_delta: np.ndarray, *, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: float = 0.0, maximize: bool = False, l1: float = 0.0,
             l1_mode: str = "coupled") -> None:
    """One Adadelta step, in place (torch.optim.Adadelta).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (if weight_decay != 0)
        s = rho * s + (1 - rho) * g^2
        delta = sqrt(a + eps) / sqrt(s + eps) * g
        a = rho * a + (1 - rho) * delta^2
        p = p - lr * delta
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io)

    Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    """
    p, g, s, a = f64(param, grad, square_avg, acc_delta)
    g = direction(g, p, maximize, l1, l1_mode)
    if weight_decay != 0:
        g = g + weight_decay * p
    s = rho * s + (1 - rho) * g * g
    delta = np.sqrt(a + eps) / np.sqrt(s + eps) * g
    a = rho * a + (1 - rho) * delta * delta
    store(square_avg, s)
    store(acc_delta, a)
    store(param, proximal(p - lr * delta, lr, l1, l1_mode))
