"""Pointer tables: the (slot x tensor) grid of data pointers a multi-tensor kernel walks.

A table is built (and every array validated) once; an optimizer keeps its tables and, on each
step, only swaps in the new gradients' pointers through a C++ fast path, so the Python work per
step does not grow with the number of tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._arrays import (
    DTYPE_CODES,
    ITEMSIZE,
    ArraySpec,
    check_contiguous,
    check_float,
    check_writable,
    describe,
    first_overlap,
)

_NUMPY_TYPE_NUM = {name: np.dtype(name).num for name in ("float32", "float64", "float16")}


class MissingGrad(ValueError):
    """A None where an array was expected (a parameter without a gradient this step)."""


@dataclass
class TensorTable:
    """One kernel call's arrays: all of one dtype and one device."""

    slots: tuple[str, ...]
    dtype: str
    device: tuple[str, int]
    index: np.ndarray  # positions of these tensors in the caller's lists
    specs: dict[str, list[ArraySpec | None]]
    ptrs: np.ndarray = field(init=False)  # uint64 [n_slots, n]
    numel: np.ndarray = field(init=False)  # int64 [n]

    def __post_init__(self) -> None:
        n = len(self.index)
        self.ptrs = np.zeros((len(self.slots), n), dtype=np.uint64)
        for row, slot in enumerate(self.slots):
            specs = self.specs.get(slot)
            if specs is not None:
                self.ptrs[row] = [s.ptr for s in specs]
        first = self.specs[self.slots[0]]
        self.numel = np.array([s.numel for s in first], dtype=np.int64)
        shapes = [s.shape for s in first]
        self.shape_offsets = np.cumsum([0] + [len(s) for s in shapes], dtype=np.int64)
        self.shape_dims = np.array([d for s in shapes for d in s], dtype=np.int64)
        self.dtype_code = DTYPE_CODES[self.dtype]
        self._span = _as_range(self.index)
        self._others_sorted: tuple | None = None  # (starts, ends, row, ids, rows) cache

    def __len__(self) -> int:
        return len(self.index)

    def row(self, slot: str) -> int:
        return self.slots.index(slot)

    def nbytes(self) -> np.ndarray:
        return self.numel * ITEMSIZE[self.dtype]

    def replace(self, slot: str, arrays: Sequence[Any], *, writeable: bool = False) -> None:
        """Point `slot` at new arrays (taken at this table's positions of the full list),
        validated against the first slot's shapes, dtype and device, and refused if any of
        them shares memory with another array of the table. Raises MissingGrad for a None."""
        picked = (arrays[self._span.start:self._span.stop] if self._span is not None
                  else [arrays[i] for i in self.index])
        if not isinstance(picked, list):
            picked = list(picked)
        row = self.row(slot)
        old = self.ptrs[row].copy()
        if not self._gather_numpy(picked, row, writeable):
            self.ptrs[row] = old
            if any(a is None for a in picked):
                raise MissingGrad(f"{slot}: some entries are None")
            first = self.specs[self.slots[0]]
            specs = [describe(a, slot, int(i)) for a, i in zip(picked, self.index, strict=True)]
            for s, ref, i in zip(specs, first, self.index, strict=True):
                _check_like(s, ref, slot, int(i), self.slots[0], writeable, (self.dtype,))
            self.ptrs[row] = [s.ptr for s in specs]
        if not np.array_equal(old, self.ptrs[row]):
            if self._others_sorted is not None and self._others_sorted[2] != row:
                self._others_sorted = None  # it holds this row's old pointers
            self._check_row_overlap(row)

    def _gather_numpy(self, picked: list[Any], row: int, writeable: bool) -> bool:
        """The C++ fast path: True if every entry is a valid NumPy array for this row."""
        type_num = _NUMPY_TYPE_NUM.get(self.dtype)
        if type_num is None or self.device[0] != "cpu":
            return False
        from . import _C

        return _C.gather_pointers(picked, self.ptrs[row], type_num, self.shape_dims,
                                  self.shape_offsets, writeable) < 0

    def _check_row_overlap(self, row: int) -> None:
        n = len(self)
        nbytes = self.nbytes()
        mine_s = self.ptrs[row].astype(np.int64)
        mine_e = mine_s + nbytes
        hit = first_overlap(mine_s, mine_e)
        if hit is not None:
            raise _alias_error(self.slots[row], int(self.index[hit[0]]), self.slots[row],
                               int(self.index[hit[1]]))
        if self._others_sorted is None or self._others_sorted[2] != row:
            others = [r for r in range(len(self.slots)) if r != row and self.ptrs[r].any()]
            s = np.concatenate([self.ptrs[r].astype(np.int64) for r in others]) if others \
                else np.zeros(0, np.int64)
            e = s + np.tile(nbytes, len(others))
            keep = e > s
            order = np.argsort(s[keep], kind="stable")
            ids = np.nonzero(keep)[0][order]
            self._others_sorted = (s[ids], e[ids], row, ids, others)
        s_sorted, e_sorted, _, ids, others = self._others_sorted
        if s_sorted.size == 0:
            return
        live = mine_e > mine_s
        pos = np.searchsorted(s_sorted, mine_s, side="right")
        # the interval starting at or before mine, and the one starting after it
        before = np.where(pos > 0, e_sorted[np.maximum(pos - 1, 0)] > mine_s, False)
        after = np.where(pos < s_sorted.size,
                         s_sorted[np.minimum(pos, s_sorted.size - 1)] < mine_e, False)
        clash = np.nonzero(live & (before | after))[0]
        if clash.size:
            k = int(clash[0])
            j = int(pos[k] - 1 if before[k] else pos[k])
            other = int(ids[j])
            other_row, other_k = others[other // n], other % n
            raise _alias_error(self.slots[row], int(self.index[k]), self.slots[other_row],
                               int(self.index[other_k]))


def _as_range(index: np.ndarray) -> slice | None:
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return None


def _alias_error(a: str, i: int, b: str, j: int) -> ValueError:
    return ValueError(f"{a}[{i}] and {b}[{j}] share memory: fastopt updates arrays in place, so "
                      "every param, grad and state array must be distinct")


def _check_like(s: ArraySpec, ref: ArraySpec, name: str, i: int, ref_name: str,
                writeable: bool, allowed: Sequence[str]) -> None:
    if s.shape != ref.shape:
        raise ValueError(f"{name}[{i}]: shape {s.shape} does not match {ref_name}[{i}] "
                         f"shape {ref.shape}")
    if s.dtype != ref.dtype:
        raise TypeError(f"{name}[{i}]: dtype {s.dtype} does not match {ref_name}[{i}] "
                        f"dtype {ref.dtype}")
    check_float(s, name, i, allowed)
    if s.device != ref.device:
        raise ValueError(f"{name}[{i}]: on {s.device[0]}:{s.device[1]} but {ref_name}[{i}] is "
                         f"on {ref.device[0]}:{ref.device[1]} (mixing devices is not supported)")
    check_contiguous(s, name, i)
    if writeable:
        check_writable(s, name, i)


#: Storage dtypes the kernels take, per device type.
SUPPORTED_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32", "float64"),
    "cuda": ("float32", "float64", "float16", "bfloat16"),
}


def build_tables(slots: Sequence[str], arrays: Mapping[str, Sequence[Any] | None],
                 written: set[str],
                 allowed: Mapping[str, Sequence[str]] = SUPPORTED_DTYPES) -> list[TensorTable]:
    """Validate the arrays of every slot and group them into tables of one dtype and device.

    slots[0] is the reference list (params): every other slot must match it, index by index,
    in shape, dtype and device. Slots in `written` must be writable. No two arrays may share
    memory.
    """
    ref_name = slots[0]
    ref = arrays[ref_name]
    if ref is None or len(ref) == 0:
        raise ValueError(f"{ref_name}: empty list (nothing to step)")
    n = len(ref)
    specs: dict[str, list[ArraySpec] | None] = {}
    for slot in slots:
        lst = arrays.get(slot)
        if lst is None:
            specs[slot] = None
            continue
        if isinstance(lst, (str, bytes)) or not isinstance(lst, Sequence):
            lst = list(lst)
        if len(lst) != n:
            raise ValueError(f"{slot}: has {len(lst)} entries but {ref_name} has {n}")
        specs[slot] = [describe(a, slot, i) for i, a in enumerate(lst)]
    for i, r in enumerate(specs[ref_name]):
        check_float(r, ref_name, i, allowed.get(r.device[0], ()))
        check_contiguous(r, ref_name, i)
        if ref_name in written:
            check_writable(r, ref_name, i)
        for slot in slots[1:]:
            if specs[slot] is not None:
                _check_like(specs[slot][i], r, slot, i, ref_name, slot in written, (r.dtype,))
    _check_no_aliasing(slots, specs)
    groups: dict[tuple[str, tuple[str, int]], list[int]] = {}
    for i, r in enumerate(specs[ref_name]):
        groups.setdefault((r.dtype, r.device), []).append(i)
    tables = []
    for (dtype, device), idx in groups.items():
        sub = {slot: (None if sp is None else [sp[i] for i in idx]) for slot, sp in specs.items()}
        tables.append(TensorTable(tuple(slots), dtype, device, np.array(idx, np.int64), sub))
    return tables


def _check_no_aliasing(slots: Sequence[str], specs: Mapping[str, list[ArraySpec] | None]) -> None:
    names, starts, ends = [], [], []
    for slot in slots:
        for i, s in enumerate(specs[slot] or ()):
            names.append((slot, i))
            starts.append(s.ptr)
            ends.append(s.ptr + s.nbytes)
    hit = first_overlap(np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))
    if hit is not None:
        (a, i), (b, j) = names[hit[0]], names[hit[1]]
        raise _alias_error(a, i, b, j)
