import numpy as np

from ._io import direction, f64, moments, proximal, store, weight_decay_step


def adam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
         max_exp_avg_sq: np.ndarray | None = None, *, step: int, lr: float = 1e-3,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
         amsgrad: bool = False, maximize: bool = False, bias_correction: bool = True,
         eps_inside_sqrt: bool = False, l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One Adam (decoupled_weight_decay=False) or AdamW (True) step, in place
    (torch.optim.Adam / AdamW).

        g = -g if maximize else g
        g = g + l1 * sign(p)                (coupled L1, see _io)
        g = g + weight_decay * p            (Adam, L2 penalty, if weight_decay != 0)
        p = p * (1 - lr * weight_decay)     (AdamW, decoupled decay, if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v); v = v_max    (AMSGrad; NaN propagates, as torch.maximum)
        bc1 = 1 - beta1^step, bc2 = 1 - beta2^step   (both 1 if not bias_correction)
        p = p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
        p = p - lr / bc1 * m / sqrt(v / bc2 + eps)   (eps_inside_sqrt)
        p = sign(p) * max(|p| - lr * l1, 0)          (proximal L1, see _io)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Loshchilov & Hutter,
    "Decoupled Weight Decay Regularization", ICLR 2019; Reddi et al., "On the Convergence of
    Adam and Beyond", ICLR 2018 (AMSGrad).
    """
    beta1, beta2 = betas
    p, g, m, v, v_max = f64(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    g = direction(g, p, maximize, l1, l1_mode)
    g, p = weight_decay_step(g, p, lr, weight_decay, decoupled_weight_decay)
    m, v = moments(g, m, v, betas, exp_avg, exp_avg_sq)
    if amsgrad:
        v = np.maximum(v_max, v)
        store(max_exp_avg_sq, v)
    bc1 = 1 - beta1**step if bias_correction else 1.0
    bc2 = 1 - beta2**step if bias_correction else 1.0
    if eps_inside_sqrt:
        denom = np.sqrt(v / bc2 + eps)
    else:
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
    p = p - lr / bc1 * (m / denom)
    store(param, proximal(p, lr, l1, l1_mode))
