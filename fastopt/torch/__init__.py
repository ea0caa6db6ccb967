"""PyTorch drop-ins: ``torch.optim`` optimizers and ``torch.nn.functional`` losses running
fastopt's fused kernels on the tensors' own memory.

    import fastopt.torch as fo
    opt = fo.AdamW(model.parameters(), lr=1e-3)      # instead of torch.optim.AdamW
    loss = fo.cross_entropy(logits, target)           # instead of F.cross_entropy
    loss = fo.linear_cross_entropy(h, head.weight, y) # F.cross_entropy(head(h), y), chunked
    loss_fn = fo.nn.CrossEntropyLoss()                # instead of torch.nn.CrossEntropyLoss
"""

from __future__ import annotations

from . import functional, nn, optim
from .clip import clip_grad_norm_
from .functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    fused_losses_available,
    huber_loss,
    kl_div,
    l1_loss,
    linear_cross_entropy,
    mse_loss,
    smooth_l1_loss,
)
from .optim import FusedOptimizer, from_rule

# one class per optimizer of fastopt.ops.REGISTRY (fastopt.torch.optim.make_class)
globals().update({name: getattr(optim, name) for name in optim.__all__})

__all__ = [*optim.__all__, "FusedOptimizer", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "clip_grad_norm_", "cross_entropy", "from_rule",
           "functional", "fused_losses_available", "huber_loss", "kl_div", "l1_loss",
           "linear_cross_entropy", "mse_loss", "nn", "smooth_l1_loss"]
