"""torch.nn.utils.clip_grad_norm_ as a drop-in, on fastopt's fused clipping kernels."""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce

import torch

from .. import clip as _clip


def clip_grad_norm_(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> torch.Tensor:
    """Scale the gradients of `parameters` in place so their joint norm is at most max_norm,
    as torch.nn.utils.clip_grad_norm_ (same signature, same result):

        norm = (sum over all gradient elements |g|^p)^(1/p)        (max |g| for p = inf)
        g = g * min(max_norm / (norm + 1e-6), 1)

    Returns the norm before clipping as a 0-dim tensor on the first gradient's device, of the
    gradients' promoted dtype (float32 for none); parameters without a gradient are skipped.
    One fused multi-tensor norm pass and one scaling pass (fastopt.clip.clip_grad_norm_); the
    validated tables of the same gradients are kept across calls. `foreach` is accepted for
    compatibility: the kernels always walk all tensors at once. With error_if_nonfinite a NaN
    or infinite norm raises RuntimeError and leaves the gradients unchanged. The gradients'
    autograd version counters are bumped, as torch's in-place multiply does.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = _clip.clip_grad_norm_(grads, float(max_norm), norm_type, error_if_nonfinite)
    torch._C._increment_version(grads)
    dtype = reduce(torch.promote_types, {g.dtype for g in grads})
    return torch.tensor(norm, dtype=dtype, device=grads[0].device)


__all__ = ["clip_grad_norm_"]
