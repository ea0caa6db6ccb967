import numpy as np

from ._io import direction, f64, proximal, store


def adamax(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_inf: np.ndarray, *,
           step: int, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
           eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False,
           l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One Adamax step, in place (torch.optim.Adamax).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g
        u = max(beta2 * u, |g| + eps)       (NaN propagates, as torch.maximum)
        p = p - lr / (1 - beta1^step) * m / u
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
    """
    beta1, beta2 = betas
    p, g, m, u = f64(param, grad, exp_avg, exp_inf)
    g = direction(g, p, maximize, l1, l1_mode)
    if weight_decay != 0:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    store(exp_avg, m)
    store(exp_inf, u)
    p = p - lr / (1 - beta1**step) * (m / u)
    store(param, proximal(p, lr, l1, l1_mode))
