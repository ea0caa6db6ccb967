"""Errors of the torch path that torch itself words differently (the pointer tables of the
fastopt.torch optimizers live in fastopt._table, shared with fastopt.optim)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SparseGradError(TypeError, RuntimeError):
    """A sparse gradient reached a dense fused optimizer (torch raises RuntimeError here)."""


def check_grads(name: str, grads: Sequence[torch.Tensor], index: Sequence[int]) -> None:
    """Explain why a gradient cannot be stepped by a fused dense kernel."""
    for i, g in zip(index, grads, strict=True):
        if g.layout != torch.strided:
            raise SparseGradError(f"{name} does not support sparse gradients: grad of param {i} "
                                  f"has layout {g.layout} (use a dense gradient, or "
                                  "torch.optim.SparseAdam)")
