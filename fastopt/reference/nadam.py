import numpy as np

from ._io import direction, f64, moments, proximal, store, weight_decay_step


def nadam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
          step: int, mu_product: float = 1.0, lr: float = 2e-3,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, momentum_decay: float = 4e-3,
          decoupled_weight_decay: bool = False, maximize: bool = False, l1: float = 0.0,
          l1_mode: str = "coupled") -> float:
    """One NAdam step, in place (torch.optim.NAdam); returns the new mu_product.

    mu_product is the product of the momentum schedule before this step (1.0 at step 1); the
    caller keeps the returned value for the next step, as torch keeps state["mu_product"].

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (L2 penalty, if weight_decay != 0)
        p = p * (1 - lr * weight_decay)     (decoupled decay, if weight_decay != 0)
        mu = beta1 * (1 - 0.5 * 0.96^(step * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96^((step + 1) * momentum_decay))
        mu_product = mu_product * mu
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        denom = sqrt(v / (1 - beta2^step)) + eps
        p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
        p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
        p = sign(p) * max(|p| - lr * l1, 0) (proximal L1, see _io)

    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop; decoupled decay:
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    beta1, beta2 = betas
    p, g, m, v = f64(param, grad, exp_avg, exp_avg_sq)
    g = direction(g, p, maximize, l1, l1_mode)
    g, p = weight_decay_step(g, p, lr, weight_decay, decoupled_weight_decay)
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    m, v = moments(g, m, v, betas, exp_avg, exp_avg_sq)
    denom = np.sqrt(v / (1 - beta2**step)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * (g / denom)
    p = p - lr * mu_next / (1 - mu_product * mu_next) * (m / denom)
    store(param, proximal(p, lr, l1, l1_mode))
    return float(mu_product)
