import math

import numpy as np

from ._io import direction, f64, moments, proximal, store, weight_decay_step


def radam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
          step: int, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          maximize: bool = False, l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One RAdam step, in place (torch.optim.RAdam).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (L2 penalty, if weight_decay != 0)
        p = p * (1 - lr * weight_decay)     (decoupled decay, if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        bc1 = 1 - beta1^step, bc2 = 1 - beta2^step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2^step / bc2
        if rho_t > 5 (the variance of the adaptive rate is tractable):
            r = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            p = p - lr * r * sqrt(bc2) / bc1 * m / (sqrt(v) + eps)
        else (SGD with momentum):
            p = p - lr / bc1 * m
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io)

    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
    decoupled decay: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    beta1, beta2 = betas
    p, g, m, v = f64(param, grad, exp_avg, exp_avg_sq)
    g = direction(g, p, maximize, l1, l1_mode)
    g, p = weight_decay_step(g, p, lr, weight_decay, decoupled_weight_decay)
    m, v = moments(g, m, v, betas, exp_avg, exp_avg_sq)
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2**step / bc2
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        p = p - lr * r * math.sqrt(bc2) / bc1 * (m / (np.sqrt(v) + eps))
    else:
        p = p - lr / bc1 * m
    store(param, proximal(p, lr, l1, l1_mode))
