"""Cached pointer tables for torch tensors.

A param group's tables (params, grads and state rows) are built and fully validated once. Each
later step re-reads only the data pointers of the params (to notice memory that moved, e.g.
``p.data = ...`` or ZeRO's bucket views) and of the grads (``zero_grad(set_to_none=True)``
makes new ``.grad`` tensors every step), with a few C-speed passes over the lists; the tables
are rebuilt only when something else changed. The tables hold no reference to any gradient, so
``zero_grad(set_to_none=True)`` still frees them. (A compiled single pass over the same torch
methods measured no faster: the methods' own cost dominates, so these stay Python passes.)

Shapes and devices of ``.grad`` are enforced by torch when a gradient is assigned; the dtype
too unless ``grad_dtype`` was relaxed, so the dtype is re-checked here along with layout (a
sparse grad has no data pointer) and contiguity.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._table import TensorTable, build_tables

_data_ptr = torch.Tensor.data_ptr
_is_contiguous = torch.Tensor.is_contiguous
_dtype_of = operator.attrgetter("dtype")


class SparseGradError(TypeError, RuntimeError):
    """A sparse gradient reached a dense fused optimizer (torch raises RuntimeError here)."""


def check_grads(name: str, grads: Sequence[torch.Tensor], index: Sequence[int]) -> None:
    """Explain why a gradient cannot be stepped by a fused dense kernel."""
    for i, g in zip(index, grads, strict=True):
        if g.layout != torch.strided:
            raise SparseGradError(f"{name} does not support sparse gradients: grad of param {i} "
                                  f"has layout {g.layout} (use a dense gradient, or "
                                  "torch.optim.SparseAdam)")


class GroupTables:
    """The pointer tables of the params of one group that have a gradient."""

    def __init__(self, slots: Sequence[str], active: list[int] | None,
                 params: list[torch.Tensor], grads: list[torch.Tensor],
                 states: dict[str, list[torch.Tensor] | None], written: set[str]) -> None:
        self.slots = tuple(slots)
        self.active = active  # positions in the group's params, None when all of them
        self.params = params
        self.states = states
        arrays: dict[str, Any] = {"param": params, "grad": grads, **states}
        self.tables: list[TensorTable] = build_tables(self.slots, arrays, written)
        for t in self.tables:
            # keep no reference to the gradients: zero_grad(set_to_none=True) must free them
            t.specs["grad"] = None
        self.param_ptrs = list(map(_data_ptr, params))
        self.grad_ptrs = list(map(_data_ptr, grads))
        self.dtypes = list(map(_dtype_of, params))
        self._grad_row = self.slots.index("grad")
        t0 = self.tables[0]
        self._whole = len(self.tables) == 1 and t0._span is not None

    def pick(self, grads: list[Any]) -> list[Any]:
        """The entries of `grads` (all of the group's) that these tables cover."""
        return grads if self.active is None else [grads[i] for i in self.active]

    def refresh(self, params: list[torch.Tensor], grads: list[Any]) -> bool:
        """Point the grad rows at `grads` (all of the group's, in order). False when the tables
        no longer describe these tensors and must be rebuilt."""
        if self.active is not None:
            if sum(g is not None for g in grads) != len(self.active):
                return False
            params = self.pick(params)
            grads = self.pick(grads)
        if len(params) != len(self.params) or list(map(_data_ptr, params)) != self.param_ptrs:
            return False
        try:
            ptrs = list(map(_data_ptr, grads))  # TypeError for None, RuntimeError for sparse
            # a new tensor may sit at an old address: the checks run whatever the pointers
            if not (all(map(_is_contiguous, grads))
                    and all(map(operator.is_, map(_dtype_of, grads), self.dtypes))):
                return False
        except (TypeError, RuntimeError):
            return False
        if ptrs == self.grad_ptrs:
            return True  # e.g. zero_grad(set_to_none=False): the same memory as last step
        new = np.array(ptrs, dtype=np.uint64)
        row = self._grad_row
        for t in self.tables:
            t.ptrs[row] = new if self._whole else new[t.index]
            t._check_row_overlap(row)
        self.grad_ptrs = ptrs
        return True

    def subset(self, keep: Sequence[int], grads: list[Any],
               written: set[str]) -> list[TensorTable]:
        """Fresh tables over some of these tensors (positions in this object's lists; grads
        as returned by pick())."""
        arrays: dict[str, Any] = {"param": [self.params[k] for k in keep],
                                  "grad": [grads[k] for k in keep]}
        for slot, lst in self.states.items():
            arrays[slot] = None if lst is None else [lst[k] for k in keep]
        return build_tables(self.slots, arrays, written)
