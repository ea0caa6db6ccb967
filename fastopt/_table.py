"""Pointer tables: the (slot x tensor) grid of data pointers a multi-tensor kernel walks.

A table is built (and every array validated) once and kept by its optimizer (TableCache).
A cached pointer is the most dangerous thing in this library: the memory it names can move
(``p.data = ...``, ``Module.to()``), be freed (a replaced state entry, a pickled copy) or change
shape. So a cached table is used only under this invariant (TableCache.tables):

    A table reaches a kernel only if, in the same call and after the caller's last chance to
    change anything, every one of its rows was re-read from the arrays the caller holds now
    and each entry's data pointer, byte size, dtype, layout and device found equal to what was
    validated when the table was built (a new gradient is validated in full instead). Anything
    else rebuilds the table from scratch with full validation (aliasing included).

The re-read costs C speed per tensor, not Python work: one C++ pass per row for NumPy arrays
(fastopt._C.gather_pointers), a few map() passes over torch's C getters for tensors, and the
generic describe() only for other array types.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as evolve
from itertools import repeat
from typing import Any

import numpy as np

from ._arrays import (
    DTYPE_CODES,
    ITEMSIZE,
    ArraySpec,
    check_dense,
    check_float,
    check_same_layout,
    check_writable,
    cuda_stream,
    describe,
    first_overlap,
)
from .reference.quant8 import packed_size

_NUMPY_TYPE_NUM = {name: np.dtype(name).num for name in ("float32", "float64", "float16")}
_is = operator.is_


class MissingGrad(ValueError):
    """A None where an array was expected (a parameter without a gradient this step)."""


def _framework(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return "numpy"
    return "torch" if type(obj).__module__.startswith("torch") else "other"


class _TorchRow:
    """C-speed re-reads of a list of torch tensors (torch's own getters through map())."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        T = torch.Tensor
        self.data_ptr, self.contiguous, self.stride = T.data_ptr, T.is_contiguous, T.stride
        self.get_device = T.get_device
        self.nbytes = operator.attrgetter("nbytes")
        self.dtype = operator.attrgetter("dtype")
        self.shape = operator.attrgetter("shape")
        self.increment_version = torch._C._increment_version


_torch_row: _TorchRow | None = None
_gather: list[Any] = []  # [fastopt._C.gather_pointers or None], resolved once


def _gather_pointers() -> Any:
    """The C++ NumPy pointer gather, or None in a source checkout that was never built (the
    generic describe() path then re-reads every array: slower, as safe)."""
    if not _gather:
        try:
            from ._C import gather_pointers
        except ImportError:
            gather_pointers = None
        _gather.append(gather_pointers)
    return _gather[0]


def _torch() -> _TorchRow:
    global _torch_row
    if _torch_row is None:
        _torch_row = _TorchRow()
    return _torch_row


@dataclass
class TensorTable:
    """One kernel call's arrays, on one device: params and grads of one dtype (`dtype`), each
    other row of one dtype too (`row_dtypes`; a state row may be stored in another dtype than
    the params, see STATE_DTYPES)."""

    slots: tuple[str, ...]
    dtype: str
    device: tuple[str, int]
    index: np.ndarray  # positions of these tensors in the caller's lists
    specs: dict[str, list[ArraySpec] | None]
    written: frozenset[str] = frozenset()  # rows the kernel writes
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
        self.row_dtypes = tuple(
            self.specs[slot][0].dtype if self.specs.get(slot) else None for slot in self.slots)
        # one framework for the whole table, or the generic path (a list may mix them)
        kinds = {_framework(x.obj) for slot in self.slots for x in (self.specs.get(slot) or ())}
        self.framework = kinds.pop() if len(kinds) == 1 else "other"
        # NumPy's C++ gather checks C order only; other layouts take the generic path
        self._all_contiguous = all(s.contiguous for s in first)
        self._span = _as_range(self.index)
        self._others_sorted: tuple | None = None  # (starts, ends, row, ids, rows) cache
        self._objects: dict[str, list[Any]] = {}
        self._written_objects: list[Any] | None = None  # what bump_versions bumps
        self._ptr_lists: dict[int, tuple[np.ndarray, list[int]]] = {}
        self.trusted_shapes = False  # see _gather_torch
        self._stream = 0  # the CUDA stream of a released row's latest arrays (stream())
        if self.framework == "torch":
            tr = _torch()
            self._torch_dtypes = [getattr(tr.torch, d) if d else None for d in self.row_dtypes]
            self._shapes = [tr.torch.Size(s.shape) for s in first]
            self._strides = None if self._all_contiguous else \
                [tuple(s.obj.stride()) for s in first]
            self._device = -1 if self.device[0] == "cpu" else self.device[1]
        self._nbytes_lists: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def row(self, slot: str) -> int:
        return self.slots.index(slot)

    def release(self, slot: str) -> None:
        """Drop the table's references to a row's arrays (e.g. grads: zero_grad(set_to_none)
        must free them), keeping their layout to validate the next call's arrays against and
        the CUDA stream of this call."""
        specs = self.specs.get(slot)
        if not specs or specs[0].obj is None:
            return
        if self.device[0] == "cuda":
            self._stream = cuda_stream(specs[0].obj, self.device[1])
        self.specs[slot] = [evolve(s, obj=None) for s in specs]
        self._objects.pop(slot, None)
        self._written_objects = None

    def stream(self) -> int:
        """The CUDA stream a kernel over this table runs on (see _arrays.cuda_stream): that of
        the first row whose arrays the table holds, else of the released row's latest arrays."""
        for slot in self.slots:
            specs = self.specs.get(slot)
            if specs and specs[0].obj is not None:
                return cuda_stream(specs[0].obj, self.device[1])
        return self._stream

    def only(self, slot: str) -> TensorTable:
        """A table of this one's `slot` row alone, at its current pointers (the grads of an
        optimizer's table, for a kernel that walks row 0: clipping's scale)."""
        sub = copy.copy(self)
        row = self.row(slot)
        sub.slots = (slot,)
        sub.row_dtypes = (self.row_dtypes[row],)
        if self.framework == "torch":
            sub._torch_dtypes = [self._torch_dtypes[row]]
        sub.ptrs = self.ptrs[row][None].copy()
        sub.specs = {slot: self.specs.get(slot)}
        sub.written = frozenset({slot})
        sub._stream = self.stream()
        sub._objects, sub._ptr_lists = {}, {}
        sub._written_objects, sub._others_sorted = [], None  # nothing to bump from here
        return sub

    def nbytes(self, row: int = 0) -> np.ndarray:
        """The byte size of each of a row's arrays (row 0, the params', by default; an 8-bit
        state row's: its packed codes and absmax)."""
        dtype = self.row_dtypes[row] or self.dtype
        if dtype == QUANT8:
            return packed_size(self.numel)
        return self.numel * ITEMSIZE[dtype]

    def _nbytes_list(self, row: int) -> list[int]:
        cached = self._nbytes_lists.get(row)
        if cached is None:
            cached = self._nbytes_lists[row] = self.nbytes(row).tolist()
        return cached

    def mixed(self) -> bool:
        """Whether some row is stored in another dtype than the params (backends declare
        whether they take such tables: `mixed_storage`)."""
        return any(d not in (None, self.dtype) for d in self.row_dtypes)

    def _pick(self, arrays: Sequence[Any]) -> list[Any]:
        picked = (arrays[self._span.start:self._span.stop] if self._span is not None
                  else [arrays[i] for i in self.index])
        return picked if isinstance(picked, list) else list(picked)

    def objects(self, slot: str) -> list[Any]:
        """The arrays of a kept row (cached: compared by identity every call)."""
        objs = self._objects.get(slot)
        if objs is None:
            objs = self._objects[slot] = [s.obj for s in self.specs[slot]]
        return objs

    # --- the per-call re-reads ---------------------------------------------------------
    def current(self, slot: str, arrays: Sequence[Any], writeable: bool) -> bool:
        """True when `arrays` (taken at this table's positions of the full list) are the very
        arrays this row was built from, at the same addresses, with the same byte size, dtype,
        shape and layout. False means the table no longer describes them: rebuild it."""
        picked = self._pick(arrays)
        row = self.row(slot)
        if self.specs.get(slot) is None:  # a master row where these params have none
            return all(a is None for a in picked)
        if (self.framework == "numpy" and self._all_contiguous and _gather_pointers()
                and self.row_dtypes[row] != QUANT8):
            out = np.empty(len(picked), np.uint64)
            return (self._gather_numpy(picked, out, writeable, row)
                    and np.array_equal(out, self.ptrs[row]))
        if not all(map(_is, picked, self.objects(slot))):
            return False
        if self.framework == "torch":
            # the same tensor objects: only their storage can have moved (p.data = ...,
            # set_, resize_); a pointer and a byte size equal to the validated ones mean the
            # same, live memory (the tensor holds it). Only a reinterpreting view of that very
            # memory (.data = p.view(dtype)) could keep both: memory-safe, and its next grad
            # is refused for its dtype.
            tr = _torch()
            try:
                return (list(map(tr.data_ptr, picked)) == self._ptr_list(row)
                        and list(map(tr.nbytes, picked)) == self._nbytes_list(row))
            except RuntimeError:  # e.g. a storage swapped for a sparse or meta tensor
                return False
        try:
            now = [describe(a, slot, int(i)) for a, i in zip(picked, self.index, strict=True)]
        except (TypeError, ValueError):
            return False
        return all(a.ptr == b.ptr and a.shape == b.shape and a.dtype == b.dtype
                   and a.device == b.device and a.layout == b.layout
                   and (a.readonly == b.readonly or not writeable)
                   for a, b in zip(now, self.specs[slot], strict=True))

    def replace(self, slot: str, arrays: Sequence[Any], *, writeable: bool = False) -> None:
        """Point `slot` at new arrays (taken at this table's positions of the full list),
        validated against the first slot's shapes, dtype, layout and device, and refused if
        any of them shares memory with another array of the table. Raises MissingGrad for a
        None. The table keeps no reference to these arrays."""
        picked = self._pick(arrays)
        row = self.row(slot)
        old = self.ptrs[row].copy()
        if not self._gather(picked, row, writeable):
            self.ptrs[row] = old
            if any(a is None for a in picked):
                raise MissingGrad(f"{slot}: some entries are None")
            first = self.specs[self.slots[0]]
            specs = [describe(a, slot, int(i)) for a, i in zip(picked, self.index, strict=True)]
            dtype = self.row_dtypes[row] or self.dtype
            for s, ref, i in zip(specs, first, self.index, strict=True):
                _check_like(s, ref, slot, int(i), self.slots[0], writeable, (dtype,))
            self.ptrs[row] = [s.ptr for s in specs]
        released = self.specs.get(slot)
        if self.device[0] == "cuda" and picked and released and released[0].obj is None:
            self._stream = cuda_stream(picked[0], self.device[1])
        if not np.array_equal(old, self.ptrs[row]):
            self._ptr_lists.pop(row, None)
            if self._others_sorted is not None and self._others_sorted[2] != row:
                self._others_sorted = None  # it holds this row's old pointers
            self._check_row_overlap(row)

    def _gather(self, picked: list[Any], row: int, writeable: bool) -> bool:
        """The fast paths: True (and the row's pointers filled) if every entry is a valid
        array for this row; False sends the caller to the generic path, which explains."""
        if self.framework == "numpy" and self._all_contiguous:
            return self._gather_numpy(picked, self.ptrs[row], writeable, row)
        if self.framework == "torch":
            return self._gather_torch(picked, row)
        return False

    def _gather_numpy(self, picked: list[Any], out: np.ndarray, writeable: bool,
                      row: int) -> bool:
        type_num = _NUMPY_TYPE_NUM.get(self.row_dtypes[row] or self.dtype)
        gather = _gather_pointers()
        if type_num is None or self.device[0] != "cpu" or gather is None:
            return False
        return gather(picked, out, type_num, self.shape_dims, self.shape_offsets,
                      writeable) < 0

    def _ptr_list(self, row: int) -> list[int]:
        """The row's pointers as Python ints (cached: compared with fresh reads each call)."""
        cached = self._ptr_lists.get(row)
        if cached is None or cached[0] is not self.ptrs:
            cached = self._ptr_lists[row] = (self.ptrs, self.ptrs[row].tolist())
        return cached[1]

    def _gather_torch(self, picked: list[Any], row: int) -> bool:
        tr = _torch()
        try:
            ptrs = list(map(tr.data_ptr, picked))  # TypeError for None, RuntimeError: sparse
            # a new tensor may sit at an old address: the checks run whatever the pointers.
            # The shape pass is the dearest (a torch.Size per tensor): where torch's .grad
            # setter already enforced the param's shape, the byte size proves the extent.
            ok = (all(map(_is, map(tr.dtype, picked), repeat(self._torch_dtypes[row])))
                  and (list(map(tr.nbytes, picked)) == self._nbytes_list(row)
                       if self.trusted_shapes
                       else list(map(tr.shape, picked)) == self._shapes)
                  and list(map(tr.get_device, picked)) == [self._device] * len(picked)
                  and (all(map(tr.contiguous, picked)) if self._strides is None
                       else list(map(tuple, map(tr.stride, picked))) == self._strides))
        except (TypeError, RuntimeError):
            return False
        if ok:
            self.ptrs[row] = ptrs
        return ok

    def bump_versions(self) -> None:
        """Tell autograd that the written torch tensors changed (as an in-place torch op
        would), so a graph that saved their old values raises instead of using new ones."""
        if self._written_objects is None:
            self._written_objects = [a for slot in self.slots if slot in self.written
                                     and self.specs.get(slot) for a in self.objects(slot)
                                     if _framework(a) == "torch"]
        if not self._written_objects:
            return
        _torch().increment_version(self._written_objects)

    def _check_row_overlap(self, row: int) -> None:
        n = len(self)
        mine_s = self.ptrs[row].astype(np.int64)
        mine_e = mine_s + self.nbytes(row)
        hit = first_overlap(mine_s, mine_e)
        if hit is not None:
            raise _alias_error(self.slots[row], int(self.index[hit[0]]), self.slots[row],
                               int(self.index[hit[1]]))
        if self._others_sorted is None or self._others_sorted[2] != row:
            others = [r for r in range(len(self.slots)) if r != row and self.ptrs[r].any()]
            s = np.concatenate([self.ptrs[r].astype(np.int64) for r in others]) if others \
                else np.zeros(0, np.int64)
            e = s + (np.concatenate([self.nbytes(r) for r in others]) if others
                     else np.zeros(0, np.int64))
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
    """`s` (entry i of row `name`) fits `ref` (entry i of the params): same shape, device and
    layout, and a dtype in `allowed` (the params' own, or a state row's)."""
    if s.shape != ref.shape:
        raise ValueError(f"{name}[{i}]: shape {s.shape} does not match {ref_name}[{i}] "
                         f"shape {ref.shape}")
    if s.dtype not in allowed:
        if tuple(allowed) == (ref.dtype,):
            raise TypeError(f"{name}[{i}]: dtype {s.dtype} does not match {ref_name}[{i}] "
                            f"dtype {ref.dtype}")
        raise TypeError(f"{name}[{i}]: dtype {s.dtype} is not a state dtype for {ref_name}[{i}] "
                        f"dtype {ref.dtype} (one of {', '.join(allowed)})")
    check_float(s, name, i, allowed)
    if s.device != ref.device:
        raise ValueError(f"{name}[{i}]: on {s.device[0]}:{s.device[1]} but {ref_name}[{i}] is "
                         f"on {ref.device[0]}:{ref.device[1]} (mixing devices is not supported)")
    check_same_layout(s, ref, name, i, ref_name)
    if writeable:
        check_writable(s, name, i)


#: Storage dtypes the kernels take, per device type.
SUPPORTED_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32", "float64", "float16", "bfloat16"),
    "cuda": ("float32", "float64", "float16", "bfloat16"),
}


#: The dtypes a state row may be stored in, by the params' dtype: float32 and 16-bit params
#: take float32, bfloat16 or float16 state (math in float32 whatever the storage); float64
#: params float64 state only.
STATE_DTYPES: dict[str, tuple[str, ...]] = {
    "float32": ("float32", "bfloat16", "float16"),
    "bfloat16": ("bfloat16", "float32", "float16"),
    "float16": ("float16", "float32", "bfloat16"),
    "float64": ("float64",),
}


#: The dtype of 8-bit quantized state rows (fastopt.reference.quant8: codes and block absmax
#: packed in one flat uint8 array of packed_size(param size) bytes), for these params.
QUANT8 = "uint8"
QUANT8_PARAM_DTYPES = ("float32", "bfloat16", "float16")


def _check_quant8(s: ArraySpec, ref: ArraySpec, name: str, i: int, ref_name: str,
                  writeable: bool) -> None:
    """An 8-bit state row entry: a flat, contiguous uint8 array of the packed size of its
    param, 4-byte aligned (its absmaxes are float32), on the param's device."""
    want = packed_size(ref.numel)
    if len(s.shape) != 1 or s.shape[0] != want:
        raise ValueError(f"{name}[{i}]: an 8-bit state row of {ref_name}[{i}] ({ref.numel} "
                         f"elements) is a flat uint8 array of {want} bytes, got shape "
                         f"{s.shape}")
    if not s.contiguous or s.ptr % 4:
        raise ValueError(f"{name}[{i}]: an 8-bit state row must be contiguous and 4-byte "
                         "aligned")
    if s.device != ref.device or s.device[0] != "cpu":
        raise ValueError(f"{name}[{i}]: 8-bit state rows are on the CPU only, beside their "
                         f"{ref_name}[{i}] (on {ref.device[0]})")
    if writeable:
        check_writable(s, name, i)


#: The row of float32 master copies of 16-bit params (master_weights=True): entries only
#: where the param is float16 or bfloat16, None elsewhere.
MASTER = "master_param"
MASTER_PARAM_DTYPES = ("float16", "bfloat16")


def build_tables(slots: Sequence[str], arrays: Mapping[str, Sequence[Any] | None],
                 written: set[str],
                 allowed: Mapping[str, Sequence[str]] = SUPPORTED_DTYPES,
                 free: Sequence[str] = ()) -> list[TensorTable]:
    """Validate the arrays of every slot and group them into tables of one device and one
    dtype per row.

    slots[0] is the reference list (params): every other slot must match it, index by index,
    in shape, dtype and device; the slots in `free` (state rows) may instead have any dtype of
    STATE_DTYPES for the param's, and a MASTER row holds float32 arrays for 16-bit params and
    None for others. Slots in `written` must be writable. No two arrays may share memory.
    """
    ref_name = slots[0]
    lists = {slot: _as_list(slot, arrays.get(slot)) for slot in slots}
    ref = lists[ref_name]
    if ref is None or len(ref) == 0:
        raise ValueError(f"{ref_name}: empty list (nothing to step)")
    n = len(ref)
    specs: dict[str, list[ArraySpec] | None] = {}
    for slot in slots:
        lst = lists[slot]
        if lst is None:
            specs[slot] = None
            continue
        if len(lst) != n:
            raise ValueError(f"{slot}: has {len(lst)} entries but {ref_name} has {n}")
        specs[slot] = [None if a is None and slot == MASTER else describe(a, slot, i)
                       for i, a in enumerate(lst)]
    for i, r in enumerate(specs[ref_name]):
        check_float(r, ref_name, i, allowed.get(r.device[0], ()))
        check_dense(r, ref_name, i)
        if ref_name in written:
            check_writable(r, ref_name, i)
        for slot in slots[1:]:
            if specs[slot] is None:
                continue
            s = specs[slot][i]
            if slot == MASTER:
                wanted = r.dtype in MASTER_PARAM_DTYPES
                if (s is not None) != wanted:
                    raise TypeError(f"{slot}[{i}]: master weights are float32 copies of "
                                    f"float16 and bfloat16 params, one for each: {ref_name}"
                                    f"[{i}] is {r.dtype}, {slot}[{i}] is "
                                    f"{'None' if s is None else s.dtype}")
                if s is None:
                    continue
            if slot in free and s.dtype == QUANT8:
                if r.dtype not in QUANT8_PARAM_DTYPES:
                    raise TypeError(f"{slot}[{i}]: 8-bit state (uint8) is for "
                                    f"{', '.join(QUANT8_PARAM_DTYPES)} params, {ref_name}[{i}] "
                                    f"is {r.dtype}")
                _check_quant8(s, r, slot, i, ref_name, slot in written)
                continue
            _check_like(s, r, slot, i, ref_name, slot in written,
                        ("float32",) if slot == MASTER
                        else STATE_DTYPES.get(r.dtype, (r.dtype,)) if slot in free
                        else (r.dtype,))
    _check_no_aliasing(slots, specs)
    groups: dict[tuple[str, tuple[str, int], tuple], list[int]] = {}
    for i, r in enumerate(specs[ref_name]):
        rows = tuple(None if specs[slot][i] is None else specs[slot][i].dtype
                     for slot in free if specs.get(slot) is not None)
        groups.setdefault((r.dtype, r.device, rows), []).append(i)
    tables = []
    for (dtype, device, _), idx in groups.items():
        sub = {slot: (None if sp is None or sp[idx[0]] is None else [sp[i] for i in idx])
               for slot, sp in specs.items()}
        tables.append(TensorTable(tuple(slots), dtype, device, np.array(idx, np.int64), sub,
                                  frozenset(written)))
    return tables


def _as_list(name: str, lst: Any) -> Sequence[Any] | None:
    """A list argument as a sequence (generators and other iterables are read once), or a
    TypeError naming the argument."""
    if lst is None or (isinstance(lst, Sequence) and not isinstance(lst, (str, bytes))):
        return lst
    if isinstance(lst, (str, bytes)) or not hasattr(lst, "__iter__"):
        raise TypeError(f"{name}: expected a list of arrays, got {type(lst).__name__}")
    return list(lst)


def _check_no_aliasing(slots: Sequence[str], specs: Mapping[str, list[ArraySpec] | None]) -> None:
    names, starts, ends = [], [], []
    for slot in slots:
        for i, s in enumerate(specs[slot] or ()):
            if s is None:
                continue
            names.append((slot, i))
            starts.append(s.ptr)
            ends.append(s.ptr + s.nbytes)
    hit = first_overlap(np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))
    if hit is not None:
        (a, i), (b, j) = names[hit[0]], names[hit[1]]
        raise _alias_error(a, i, b, j)


class TableCache:
    """The tables of one param group (or one repeated stateless call), kept across calls and
    used only under the invariant of this module's docstring.

    `tables(arrays)` takes every row as the caller holds it now ("grad" may be None when
    checking params alone). Rows other than "grad" are the long-lived arrays (params, state):
    each is re-read and must be current, else every table is rebuilt. The "grad" row is new
    every call: validated in full (shape, dtype, layout, device, aliasing) and never kept.
    """

    def __init__(self, slots: Sequence[str], written: set[str], *,
                 allowed: Mapping[str, Sequence[str]] = SUPPORTED_DTYPES,
                 keep: str = "grad", trusted_shapes: bool = False,
                 free: Sequence[str] = ()) -> None:
        self.trusted_shapes = trusted_shapes  # torch .grad tensors: shapes enforced by torch
        self.slots = tuple(slots)
        self.free = tuple(free)  # rows of any state dtype (build_tables)
        self.written = set(written)
        self.allowed = allowed
        self.keep = keep  # the row never kept (and re-validated in full)
        self._tables: list[TensorTable] | None = None
        self._key: tuple | None = None
        self.builds = 0  # how often the tables were (re)built, for tests and benchmarks

    @property
    def built(self) -> list[TensorTable] | None:
        """The tables of the last call (None before the first), for tests and benchmarks."""
        return self._tables

    def clear(self) -> None:
        self._tables = None
        self._key = None

    def tables(self, arrays: Mapping[str, Sequence[Any] | None]) -> list[TensorTable]:
        lists = {s: arrays.get(s) for s in self.slots}
        key = tuple(None if v is None else len(v) for v in lists.values())
        tables = self._tables
        if tables is None or key != self._key or not all(
                t.current(s, lists[s], s in self.written)
                for t in tables for s in self.slots
                if s != self.keep and lists[s] is not None):
            self._tables = None  # nothing stale survives a failed build
            tables = self._build(lists)
            self._key = key
            self._tables = tables
            return tables
        fresh = lists.get(self.keep)
        if fresh is not None:
            for t in tables:
                t.replace(self.keep, fresh, writeable=self.keep in self.written)
        return tables

    def _build(self, lists: Mapping[str, Sequence[Any] | None]) -> list[TensorTable]:
        tables = build_tables(self.slots, lists, self.written, self.allowed, self.free)
        self.builds += 1
        for t in tables:
            t.trusted_shapes = self.trusted_shapes
            t.release(self.keep)
        return tables

    def __getstate__(self) -> dict[str, Any]:
        # pointers never travel: a copy re-validates against its own arrays
        return {**self.__dict__, "_tables": None, "_key": None}

    def __deepcopy__(self, memo: dict) -> TableCache:
        new = TableCache(self.slots, self.written, allowed=self.allowed, keep=self.keep,
                         trusted_shapes=self.trusted_shapes, free=self.free)
        memo[id(self)] = new
        return new
