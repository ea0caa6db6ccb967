"""The machine's limit for an op: a one-pass bandwidth probe moving the same bytes.

An op is described by its streams per element: read-modify-write (a param, a state array),
read-only (a gradient, logits) and write-only (an output). The probe runs the cheapest loop
over float32 buffers of the same byte sizes and stream shape, on the same number of tensors,
through the same chunked OpenMP driver as the kernels (csrc/cpu/probe.cpp). Without the
compiled extension it falls back to NumPy (one thread, one copy per stream), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Streams:
    """Streams an op moves per element: read-modify-write, read-only, write-only."""

    rw: int
    ro: int
    wo: int = 0

    @property
    def accesses(self) -> int:
        """Memory accesses per element (a read-modify-write stream counts twice)."""
        return 2 * self.rw + self.ro + self.wo

    def nbytes(self, numel: int, itemsize: int) -> int:
        return self.accesses * numel * itemsize


def _lib():
    try:
        from .. import _C

        return _C if hasattr(_C, "probe") else None
    except ImportError:
        return None


class Probe:
    """Buffers and a callable for one probe shape, over `tensors` tensors of `nbytes` each."""

    def __init__(self, streams: Streams, nbytes_per_tensor: int, tensors: int = 1) -> None:
        if streams.rw + streams.wo == 0:
            raise ValueError("streams: the probe needs at least one written stream")
        self.streams = streams
        self.tensors = int(tensors)
        n = max(1, int(nbytes_per_tensor) // 4)
        self.numel_per_tensor = n
        self.nbytes = streams.accesses * n * 4 * self.tensors
        n_streams = streams.rw + streams.ro + streams.wo
        # one buffer per stream, tensor t at offset t * n: the driver sees `tensors` tensors
        self._buffers = [np.ones(n * self.tensors, np.float32) for _ in range(n_streams)]
        self._lib = _lib()
        if self._lib is not None:
            offsets = np.arange(self.tensors, dtype=np.uint64) * np.uint64(n * 4)
            self._ptrs = np.stack([np.uint64(b.ctypes.data) + offsets for b in self._buffers])
            self._numel = np.full(self.tensors, n, np.int64)
            self.kind = "C++ one-pass loop"
        else:
            self.kind = "NumPy (fastopt._C not built: one thread, not one pass)"

    def __call__(self) -> None:
        s = self.streams
        if self._lib is not None:
            self._lib.probe(self._ptrs, self._numel, s.rw, s.ro, s.wo)
            return
        rw = self._buffers[:s.rw]
        ro = self._buffers[s.rw:s.rw + s.ro]
        wo = self._buffers[s.rw + s.ro:]
        src = ro[0] if ro else None
        for b in rw:
            np.subtract(src, b, out=b) if src is not None else np.negative(b, out=b)
        for b in wo:
            np.copyto(b, src if src is not None else 0.0)


__all__ = ["Probe", "Streams"]
