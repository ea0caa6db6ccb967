"""The Numba CPU kernels, compiled with @njit(parallel=True, cache=True) when the `numba`
backend first runs (importing numba takes a second).

One multi-tensor driver template serves every optimizer: `optimizer_kernel(spec)` compiles
`_optimizer` with the op's rule (fastopt/ops/<op>.py) as its global `op_rule`, under the name
`step_<op>` so that Numba's on-disk cache keeps one entry per op. Every kernel is one parallel
launch over a whole pointer table, split as csrc/cpu's driver splits it
(csrc/cpu/multi_tensor.h): each tensor into fixed CHUNK-element chunks, the chunks of all
tensors numbered in order (`first[t]` = tensor t's first chunk, `first[n]` = the total) and
spread over the threads. A chunk's work never depends on the thread count, so neither do the
results (norm partials included: one per chunk, folded in chunk order by the caller).

The frame around each rule is fastopt.ops's (frame_grad, frame_param): sign, coupled L1 and
weight decay before, the proximal soft threshold after. Values are brought to the math type
by multiplying with c[ONE] (the scalar vector is cast to the math dtype), and no rule uses a
float literal in arithmetic (Numba would type it float64).
"""

import numpy as np
from numba import carray, njit, prange, types
from numba.core import caching
from numba.extending import intrinsic

from .. import ops
from ..ops import DECAY, ONE
from . import _numba_common
from ._numba_common import pointer_intrinsic, track_rules_in_cache

track_rules_in_cache(caching)
_as_pointer = pointer_intrinsic(intrinsic, types)

CHUNK = 1 << 14  # as csrc/cpu/multi_tensor.h kChunk
MAX_SLOTS = 6  # rows of a pointer table a kernel can take

scalar = njit(cache=True, error_model="numpy")
kernel = njit(parallel=True, cache=True, error_model="numpy", fastmath=False)
frame_grad, frame_param = scalar(ops.frame_grad), scalar(ops.frame_param)
norm_term = scalar(_numba_common.norm_term)


@scalar
def _tensor(ptrs, row, t, n, like):
    """Row `row`, tensor t of the table as an n-element array; a missing entry (address 0, an
    optional state row such as AMSGrad's max_exp_avg_sq, or a row past the table's) is
    `like`, a 1-element dummy that the rule never touches."""
    if row >= ptrs.shape[0]:
        return like
    addr = ptrs[row, t]
    if addr == 0:
        return like
    return carray(_as_pointer(addr, like), (n,))


@scalar
def _chunk(first, numel, ch):
    """(tensor, begin, end) of chunk ch."""
    t = np.searchsorted(first, ch, side="right") - 1
    begin = (ch - first[t]) * CHUNK
    return t, begin, min(begin + CHUNK, numel[t])


def _optimizer(ptrs, first, numel, like, c):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        x = (_tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like),
             _tensor(ptrs, 2, t, n, like), _tensor(ptrs, 3, t, n, like),
             _tensor(ptrs, 4, t, n, like), _tensor(ptrs, 5, t, n, like))
        for i in range(begin, end):
            p = x[0][i] * c[ONE]
            g = frame_grad(p, x[1][i] * c[ONE], c)
            # op_rule: a global of each compiled copy (optimizer_kernel)
            x[0][i] = frame_param(op_rule(x, i, p * c[DECAY], g, c), c)  # noqa: F821


def optimizer_kernel(spec):
    """The driver compiled around `spec.rule`."""
    return _numba_common.optimizer_kernel(_optimizer, globals(), spec, scalar, kernel)


# --- clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_) -------------------------
@kernel
def scale(ptrs, first, numel, like, coef):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        for i in range(begin, end):
            x[i] = x[i] * coef


@kernel
def clamp(ptrs, first, numel, like, lo, hi):
    # clamp(g, -v, v); NaN stays NaN
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        for i in range(begin, end):
            if x[i] < lo:
                x[i] = lo
            elif x[i] > hi:
                x[i] = hi


@kernel
def norm_partials(ptrs, first, numel, like, kind, p, out):
    # kind: 0 l2, 1 l1, 2 linf, 3 lp; one float64 partial per chunk
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        acc = 0.0
        for i in range(begin, end):
            acc = norm_term(acc, abs(np.float64(x[i])), kind, p)
        out[ch] = acc


KERNELS = dict(scale=scale, clamp=clamp, norm_partials=norm_partials)
