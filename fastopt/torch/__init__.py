"""PyTorch drop-ins: ``torch.optim`` optimizers and ``torch.nn.functional`` losses running
fastopt's fused kernels on the tensors' own memory.

    import fastopt.torch as fo
    opt = fo.AdamW(model.parameters(), lr=1e-3)      # instead of torch.optim.AdamW
"""

from __future__ import annotations

from ._pointers import SparseGradError
from .optim import SGD, Adagrad, Adam, AdamW, FusedOptimizer, Lion, RMSprop

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "FusedOptimizer", "Lion", "RMSprop",
           "SparseGradError"]
