import numpy as np

from ._io import f64, store


def clip_grad_norm(grads: list[np.ndarray], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale every gradient in place so that their joint p-norm is at most max_norm; return the
    norm before scaling (torch.nn.utils.clip_grad_norm_).

        norm = (sum_i sum_j |g_ij|^p)^(1/p)          (max_ij |g_ij| for p = inf)
        g = g * min(max_norm / (norm + 1e-6), 1)
    """
    flat = [f64(g)[0].ravel() for g in grads]
    everything = np.concatenate(flat) if flat else np.zeros(0)
    if np.isinf(norm_type):
        norm = float(np.max(np.abs(everything))) if everything.size else 0.0
    else:
        norm = float(np.sum(np.abs(everything) ** norm_type) ** (1.0 / norm_type))
    coef = min(max_norm / (norm + 1e-6), 1.0)
    for g, x in zip(grads, flat, strict=True):
        store(g, (x * coef).reshape(g.shape))
    return norm


def clip_grad_value(grads: list[np.ndarray], clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    for g in grads:
        store(g, np.clip(f64(g)[0], -clip_value, clip_value))
