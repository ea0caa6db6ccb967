import numpy as np

from ._io import direction, f64, proximal, store


def rmsprop(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
            momentum_buffer: np.ndarray | None = None, grad_avg: np.ndarray | None = None, *,
            lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, maximize: bool = False,
            l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One RMSprop step, in place (torch.optim.RMSprop).

        g = -g if maximize else g
        g = g + l1 * sign(p)                     (coupled L1, see _io)
        g = g + weight_decay * p                 (if weight_decay != 0)
        s = alpha * s + (1 - alpha) * g^2
        ga = alpha * ga + (1 - alpha) * g        (centered)
        avg = sqrt(s - ga^2) + eps if centered else sqrt(s) + eps
        b = momentum * b + g / avg; p = p - lr * b     (if momentum > 0)
        p = p - lr * g / avg                           (otherwise)
        p = sign(p) * max(|p| - lr * l1, 0)            (proximal L1, see _io)

    Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012; centered: Graves,
    "Generating Sequences With Recurrent Neural Networks", 2013.
    """
    p, g, s, b, ga = f64(param, grad, square_avg, momentum_buffer, grad_avg)
    g = direction(g, p, maximize, l1, l1_mode)
    if weight_decay != 0:
        g = g + weight_decay * p
    s = alpha * s + (1 - alpha) * g * g
    store(square_avg, s)
    if centered:
        ga = alpha * ga + (1 - alpha) * g
        store(grad_avg, ga)
        avg = np.sqrt(s - ga * ga) + eps
    else:
        avg = np.sqrt(s) + eps
    if momentum > 0:
        b = momentum * b + g / avg
        store(momentum_buffer, b)
        p = p - lr * b
    else:
        p = p - lr * (g / avg)
    store(param, proximal(p, lr, l1, l1_mode))
