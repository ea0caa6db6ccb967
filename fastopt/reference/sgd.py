import numpy as np

from ._io import direction, f64, proximal, store


def sgd(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None = None, *,
        lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
        first_step: bool = False, l1: float = 0.0, l1_mode: str = "coupled") -> None:
    """One SGD step, in place (torch.optim.SGD).

        d = -g if maximize else g
        d = d + l1 * sign(p)                                (coupled L1, see _io)
        d = d + weight_decay * p                            (if weight_decay != 0)
        b = d if first_step else momentum * b + (1 - dampening) * d   (if momentum != 0)
        d = d + momentum * b if nesterov else b                       (if momentum != 0)
        p = p - lr * d
        p = sign(p) * max(|p| - lr * l1, 0)                 (proximal L1, see _io)

    Nesterov momentum: Sutskever et al., "On the importance of initialization and momentum in
    deep learning", ICML 2013.
    """
    p, g, b = f64(param, grad, momentum_buffer)
    d = direction(g, p, maximize, l1, l1_mode)
    if weight_decay != 0:
        d = d + weight_decay * p
    if momentum != 0:
        b = d if first_step else momentum * b + (1 - dampening) * d
        store(momentum_buffer, b)
        d = d + momentum * b if nesterov else b
    store(param, proximal(p - lr * d, lr, l1, l1_mode))
