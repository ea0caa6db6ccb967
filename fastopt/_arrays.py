"""Any array (NumPy, PyTorch, CuPy, DLPack, array interface) -> a validated ArraySpec, and the
pointer tables the kernels walk.

Every check here raises a TypeError/ValueError that names the argument, the list index and
what was expected: fastopt updates memory in place and never silently copies, so a read-only,
non-contiguous, wrongly-typed or aliased array must be refused, not worked around.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Storage dtypes the kernels understand, numbered as csrc/include/fastopt/common.h (DType).
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8,
            "uint8": 1}
_TYPESTR = {"<f4": "float32", "<f8": "float64", "<f2": "float16", "<i4": "int32",
            "<i8": "int64", "|b1": "bool", "<u8": "uint64", "|u1": "uint8"}
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST, _DLPACK_CUDA_MANAGED = 1, 2, 3, 13


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """What a kernel needs to know about one array, read without copying it."""

    obj: Any
    ptr: int
    shape: tuple[int, ...]
    dtype: str  # "float32", "float64", "float16", "bfloat16", "int32", "int64", ...
    device: tuple[str, int]  # ("cpu", 0) or ("cuda", index)
    readonly: bool
    contiguous: bool  # C-contiguous
    strides: tuple[int, ...] | None = None  # in elements; None when C-contiguous

    @property
    def layout(self) -> tuple[int, ...] | None:
        """The strides of the dimensions longer than 1 (None: C-contiguous). Two arrays of one
        shape and one layout map every index to the same offset, so an elementwise kernel may
        walk both flat."""
        if self.contiguous or self.strides is None:
            return None
        return tuple(st for d, st in zip(self.shape, self.strides, strict=True) if d != 1)

    @property
    def dense(self) -> bool:
        """True when the array covers exactly numel consecutive elements (C-contiguous, or a
        permutation of it such as a transpose or channels_last): a kernel may walk it flat."""
        if self.contiguous:
            return True
        if self.strides is None:
            return False
        expected = 1
        for st, d in sorted((st, d) for d, st in zip(self.shape, self.strides, strict=True)
                            if d != 1):
            if st != expected:
                return False
            expected *= d
        return True

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE.get(self.dtype, 1)


def _where(name: str, index: int | None) -> str:
    return name if index is None else f"{name}[{index}]"


def _c_contiguous(shape: Sequence[int], strides: Sequence[int] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides), strict=True):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _torch_spec(t: Any) -> ArraySpec:
    dtype = str(t.dtype).removeprefix("torch.")
    dev = t.device
    device = ("cpu", 0) if dev.type == "cpu" else (dev.type, dev.index or 0)
    if str(getattr(t, "layout", "torch.strided")) != "torch.strided":
        raise TypeError(f"{t.layout} tensors are not supported (dense tensors only)")
    contiguous = t.is_contiguous()
    return ArraySpec(t, t.data_ptr(), tuple(t.shape), dtype, device, False, contiguous,
                     None if contiguous else tuple(t.stride()))


def _interface_spec(obj: Any, iface: dict, device: tuple[str, int]) -> ArraySpec:
    shape = tuple(iface["shape"])
    typestr = iface["typestr"]
    dtype = _TYPESTR.get(typestr)
    if dtype is None and typestr in ("<V2", "|V2") and "bfloat16" in str(iface.get("descr", "")):
        dtype = "bfloat16"
    if dtype is None:
        dtype = typestr
    ptr, readonly = iface["data"]
    itemsize = ITEMSIZE.get(dtype, 1)
    strides = iface.get("strides")
    contiguous = _c_contiguous(shape, strides, itemsize)
    elems = None if contiguous or any(st % itemsize for st in strides) \
        else tuple(st // itemsize for st in strides)
    return ArraySpec(obj, int(ptr or 0), shape, dtype, device, bool(readonly), contiguous,
                     elems)


_DTYPE_NAMES: dict[np.dtype, str] = {}


def _numpy_dtype_name(dt: np.dtype) -> str:
    # memoized: np.dtype.name is computed in Python on every read (microseconds, the largest
    # part of describe())
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = f"big-endian {dt.name}" if dt.byteorder == ">" else dt.name
        if len(_DTYPE_NAMES) < 256:  # bounded: structured dtypes can be made without end
            _DTYPE_NAMES[dt] = name
    return name


def describe(obj: Any, name: str = "array", index: int | None = None) -> ArraySpec:
    """Read pointer, shape, dtype, device and flags of any supported array, without copying."""
    if isinstance(obj, np.generic):
        # a NumPy scalar is immutable: its __array_interface__ exports a temporary copy,
        # which an in-place kernel would write after it is freed
        raise TypeError(f"{_where(name, index)}: a NumPy scalar ({type(obj).__name__}) is "
                        "immutable; pass an array (e.g. np.array(x) or x.reshape(1))")
    if isinstance(obj, np.ndarray):
        flags = obj.flags
        contiguous = flags.c_contiguous
        strides = None
        if not contiguous and all(st % obj.itemsize == 0 for st in obj.strides):
            strides = tuple(st // obj.itemsize for st in obj.strides)
        return ArraySpec(obj, obj.ctypes.data, obj.shape, _numpy_dtype_name(obj.dtype),
                         ("cpu", 0), not flags.writeable, contiguous, strides)
    module = type(obj).__module__
    if module.startswith("torch") and hasattr(obj, "data_ptr"):
        return _torch_spec(obj)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _interface_spec(obj, cai, ("cuda", _cuda_device_of(obj)))
    ai = getattr(obj, "__array_interface__", None)
    if ai is not None:
        return _interface_spec(obj, ai, ("cpu", 0))
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        dev_type, dev_id = obj.__dlpack_device__()
        if int(dev_type) in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
            view = np.from_dlpack(obj)
            return ArraySpec(obj, view.ctypes.data, view.shape, _numpy_dtype_name(view.dtype),
                             ("cpu", 0), not view.flags.writeable, view.flags.c_contiguous)
        if int(dev_type) in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
            raise TypeError(f"{_where(name, index)}: CUDA DLPack arrays without "
                            "__cuda_array_interface__ are not supported")
        raise TypeError(f"{_where(name, index)}: DLPack device type {dev_type} is not supported")
    raise TypeError(f"{_where(name, index)}: expected an array (NumPy, PyTorch, CuPy, or any "
                    f"object with __array_interface__/__dlpack__), got {type(obj).__name__}")


def _cuda_device_of(obj: Any) -> int:
    dev = getattr(obj, "device", None)
    for attr in ("index", "id"):  # torch, CuPy
        value = getattr(dev, attr, None)
        if isinstance(value, int):
            return value
    if type(obj).__module__.startswith("numba"):  # device arrays live in the current context
        try:
            from numba import cuda

            return int(cuda.get_current_device().id)
        except Exception:
            return 0
    return 0


def cuda_stream(obj: Any, device: int) -> int:
    """The stream (a cudaStream_t as an integer; 0 is the legacy default stream) on which
    kernels over `obj` must run to stay ordered with the framework's own work: torch's current
    stream for torch tensors, CuPy's current stream for CuPy arrays, the array's own stream for
    Numba device arrays, else the stream named by __cuda_array_interface__ (v3)."""
    module = type(obj).__module__
    if module.startswith("torch"):
        import torch

        return int(torch.cuda.current_stream(device).cuda_stream)
    if module.startswith("cupy"):
        import cupy

        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    stream = getattr(obj, "stream", None)
    if stream is not None and module.startswith("numba"):
        handle = getattr(stream, "handle", stream)
        value = getattr(handle, "value", handle)
        return int(value or 0)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        value = cai.get("stream")
        # 1 and 2 are the legacy and per-thread default streams (CUDA's own encodings)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def check_float(spec: ArraySpec, name: str, index: int | None, allowed: Sequence[str]) -> None:
    if spec.dtype not in allowed:
        raise TypeError(f"{_where(name, index)}: dtype {spec.dtype} is not supported here "
                        f"(expected one of {', '.join(allowed)})")


def check_writable(spec: ArraySpec, name: str, index: int | None) -> None:
    if spec.readonly:
        raise ValueError(f"{_where(name, index)}: array is read-only, but fastopt updates it "
                         "in place")


def check_contiguous(spec: ArraySpec, name: str, index: int | None) -> None:
    if not spec.contiguous:
        raise ValueError(f"{_where(name, index)}: array is not C-contiguous; fastopt works in "
                         "place and never copies (pass a contiguous array)")


def check_dense(spec: ArraySpec, name: str, index: int | None) -> None:
    """Params may be any dense layout (C order, transposed, channels_last): the kernels walk
    memory flat, and their grads and state share the layout (check_same_layout)."""
    if not spec.dense:
        raise ValueError(f"{_where(name, index)}: array is not C-contiguous (nor a dense "
                         "permutation of it, such as a transpose or channels_last); fastopt "
                         "works in place and never copies (pass a contiguous array)")


def check_same_layout(spec: ArraySpec, ref: ArraySpec, name: str, index: int | None,
                      ref_name: str) -> None:
    if spec.layout == ref.layout:
        return
    if ref.contiguous:
        check_contiguous(spec, name, index)
    raise ValueError(f"{_where(name, index)}: memory layout (strides {spec.strides}) differs "
                     f"from {_where(ref_name, index)}'s (strides {ref.strides}); an "
                     "elementwise in-place step needs one layout")


def first_overlap(starts: np.ndarray, ends: np.ndarray) -> tuple[int, int] | None:
    """Indices (i, j) of two intervals [start, end) that overlap, or None. O(n log n)."""
    keep = np.nonzero(ends > starts)[0]  # empty arrays cannot alias anything
    if keep.size < 2:
        return None
    order = keep[np.argsort(starts[keep], kind="stable")]
    reach = np.maximum.accumulate(ends[order])
    bad = np.nonzero(reach[:-1] > starts[order[1:]])[0]
    if bad.size == 0:
        return None
    k = int(bad[0]) + 1
    j = int(order[k])
    # the earlier interval that reaches past j's start
    prior = order[:k]
    i = int(prior[np.nonzero(ends[prior] > starts[j])[0][0]])
    return (i, j) if i < j else (j, i)


def zeros_like(obj: Any, dtype: str | None = None) -> Any:
    """A new zero-filled array of obj's framework, shape and device, and of obj's dtype unless
    `dtype` (a dtype name) is given, laid out as obj when obj is dense (transposed,
    channels_last), else C-contiguous: optimizer state shares its param's layout, so a kernel
    walks both flat."""
    if isinstance(obj, np.ndarray):
        return np.zeros_like(obj, order="K", subok=False,
                             dtype=None if dtype is None else numpy_dtype(dtype))
    module = type(obj).__module__
    if module.startswith("torch"):
        import torch

        return torch.zeros_like(obj, memory_format=torch.preserve_format,
                                dtype=None if dtype is None else getattr(torch, dtype))
    if module.startswith("cupy"):
        import cupy

        with obj.device:
            return cupy.zeros(obj.shape, dtype=obj.dtype if dtype is None else dtype)
    if module.startswith("numba") and hasattr(obj, "__cuda_array_interface__"):
        return _numba_full(obj, 0.0, dtype)
    ns = getattr(obj, "__array_namespace__", None)
    if ns is not None:
        xp = ns()
        return xp.zeros_like(obj, dtype=None if dtype is None else getattr(xp, dtype))
    raise TypeError(f"cannot allocate optimizer state like a {type(obj).__name__}")


def _numba_full(obj: Any, value: float, dtype: str | None = None) -> Any:
    from numba import cuda

    with cuda.gpus[_cuda_device_of(obj)]:
        return cuda.to_device(np.full(obj.shape, value,
                                      dtype=obj.dtype if dtype is None else dtype))


def full_like(obj: Any, value: float, dtype: str | None = None) -> Any:
    if type(obj).__module__.startswith("numba") and hasattr(obj, "__cuda_array_interface__"):
        return _numba_full(obj, value, dtype)
    out = zeros_like(obj, dtype)
    if value != 0:
        if hasattr(out, "fill_"):
            out.fill_(value)
        else:
            out[...] = value
    return out


def state_like(obj: Any, value: float, dtype: str | None, signed: bool = True) -> Any:
    """A new optimizer state array for param obj, every element `value`: in dtype (None: obj's
    own), or with dtype "8bit" packed as fastopt.reference.quant8 stores it (a flat uint8 array
    of packed_size(obj's size) bytes; `signed`: the row may hold negative values), float32 for
    params under quant8.MIN_SIZE elements."""
    if dtype != "8bit":
        return full_like(obj, value, dtype)
    from .reference import quant8

    n = int(np.prod(obj.shape))
    if n < quant8.MIN_SIZE:
        return full_like(obj, value, "float32")
    return from_host(quant8.full(n, value, signed), obj)


def to_numpy(obj: Any) -> np.ndarray:
    """A NumPy copy of any array (for state_dict, tests, and the reference backend's inputs)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    module = type(obj).__module__
    if module.startswith("torch"):
        t = obj.detach()
        if str(t.dtype) == "torch.bfloat16":
            import ml_dtypes

            return t.cpu().view(__import__("torch").int16).numpy().view(ml_dtypes.bfloat16)
        return t.cpu().numpy().copy()
    if hasattr(obj, "get"):  # CuPy
        return obj.get()
    if hasattr(obj, "copy_to_host"):  # Numba device arrays
        return obj.copy_to_host()
    return np.array(obj, copy=True)


def copy_into(dst: Any, src: Any) -> None:
    """dst[...] = src for any two arrays of the same shape, keeping dst's memory (and so every
    pointer table that names it)."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, to_numpy(src) if not isinstance(src, np.ndarray) else src,
                  casting="same_kind")
        return
    module = type(dst).__module__
    if module.startswith("torch"):
        import torch

        with torch.no_grad():
            dst.copy_(src if isinstance(src, torch.Tensor) else torch.from_numpy(np.asarray(src)))
        return
    dst[...] = src


def cpu_view(ptr: int, numel: int, dtype: str) -> np.ndarray:
    """A writable NumPy view of host memory, for backends that work on NumPy arrays."""
    if numel == 0:
        return np.empty(0, dtype=numpy_dtype(dtype))
    import ctypes

    nbytes = numel * ITEMSIZE[dtype]
    buf = (ctypes.c_char * nbytes).from_address(ptr)
    return np.frombuffer(buf, dtype=numpy_dtype(dtype))


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a dtype name; bfloat16 is ml_dtypes' (NumPy has none)."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:
            raise TypeError("bfloat16 arrays on this path need ml_dtypes (pip install "
                            "ml_dtypes)") from exc
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def empty_like(obj: Any, shape: tuple[int, ...] | None = None, dtype: str | None = None) -> Any:
    """A new uninitialized C-contiguous array of obj's framework and device (and obj's shape and
    dtype unless `shape` / `dtype`, a NumPy dtype name, are given): outputs that a kernel
    overwrites entirely."""
    shape = tuple(obj.shape) if shape is None else tuple(shape)
    if isinstance(obj, np.ndarray):
        return np.empty(shape, dtype=obj.dtype if dtype is None else dtype)
    module = type(obj).__module__
    if module.startswith("torch"):
        import torch

        dt = obj.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=obj.device)
    if module.startswith("cupy"):
        import cupy

        with obj.device:
            return cupy.empty(shape, dtype=obj.dtype if dtype is None else dtype)
    if module.startswith("numba") and hasattr(obj, "__cuda_array_interface__"):
        from numba import cuda

        with cuda.gpus[_cuda_device_of(obj)]:
            return cuda.device_array(shape, dtype=obj.dtype if dtype is None else dtype)
    ns = getattr(obj, "__array_namespace__", None)
    if ns is not None:
        xp = ns()
        return xp.empty(shape, dtype=obj.dtype if dtype is None else getattr(xp, dtype))
    raise TypeError(f"cannot allocate an output like a {type(obj).__name__}")


def from_host(arr: np.ndarray, like: Any) -> Any:
    """A copy of the host array `arr` in like's framework and on like's device (results that a
    kernel produced on the host, e.g. per-row losses of a GPU loss)."""
    if isinstance(like, np.ndarray):
        return arr
    module = type(like).__module__
    if module.startswith("torch"):
        import torch

        return torch.from_numpy(arr).to(like.device)
    if module.startswith("cupy"):
        import cupy

        with like.device:
            return cupy.asarray(arr)
    if module.startswith("numba") and hasattr(like, "__cuda_array_interface__"):
        from numba import cuda

        with cuda.gpus[_cuda_device_of(like)]:
            return cuda.to_device(arr)
    out = empty_like(like, arr.shape)
    out[...] = arr
    return out
