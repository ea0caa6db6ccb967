"""The Numba CPU kernels: fastopt._numba_rules compiled with @njit(parallel=True, cache=True).
Imported only when the `numba` backend first runs (importing numba takes a second). Kernels
are module-level functions so that Numba's on-disk cache finds them again in a new process.

Every kernel is one parallel launch over a whole pointer table, split as csrc/cpu's driver
splits it (csrc/cpu/multi_tensor.h): each tensor into fixed CHUNK-element chunks, the chunks
of all tensors numbered in order (`first[t]` = tensor t's first chunk, `first[n]` = the total)
and spread over the threads. A chunk's work never depends on the thread count, so neither do
the results (norm partials included: one per chunk, folded in chunk order by the caller).
"""

import numpy as np
from numba import carray, njit, prange, types
from numba.core import caching
from numba.extending import intrinsic

from . import _numba_rules as R

R.track_rules_in_cache(caching)

CHUNK = 1 << 14  # as csrc/cpu/multi_tensor.h kChunk

rule = njit(cache=True, error_model="numpy")
adam_rule = rule(R.adam_rule)
sgd_rule = rule(R.sgd_rule)
adagrad_rule = rule(R.adagrad_rule)
rmsprop_rule = rule(R.rmsprop_rule)
lion_rule = rule(R.lion_rule)
clamp_rule = rule(R.clamp_rule)
kernel = njit(parallel=True, cache=True, error_model="numpy", fastmath=False)


@intrinsic
def _as_pointer(typingctx, addr, like):
    """The address `addr` (an integer from the pointer table) as a pointer to like's dtype."""
    sig = types.CPointer(like.dtype)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@rule
def _tensor(ptrs, row, t, n, like):
    """Row `row`, tensor t of the table as an n-element array; a missing entry (address 0, an
    optional state row such as AMSGrad's max_exp_avg_sq) is `like`, a 1-element dummy."""
    addr = ptrs[row, t]
    if addr == 0:
        return like
    return carray(_as_pointer(addr, like), (n,))


@rule
def _chunk(first, numel, ch):
    """(tensor, begin, end) of chunk ch."""
    t = np.searchsorted(first, ch, side="right") - 1
    begin = (ch - first[t]) * CHUNK
    return t, begin, min(begin + CHUNK, numel[t])


@kernel
def adam(ptrs, first, numel, like, c):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        p, g = _tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like)
        m, v = _tensor(ptrs, 2, t, n, like), _tensor(ptrs, 3, t, n, like)
        vmax = _tensor(ptrs, 4, t, n, like)
        full = ptrs[4, t] != 0
        for i in range(begin, end):
            r = adam_rule(p[i], g[i], m[i], v[i], vmax[i if full else 0], c)
            p[i] = r[0]
            m[i] = r[1]
            v[i] = r[2]
            if full:
                vmax[i] = r[3]


@kernel
def sgd(ptrs, first, numel, like, c):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        p, g, b = (_tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like),
                   _tensor(ptrs, 2, t, n, like))
        full = ptrs[2, t] != 0
        for i in range(begin, end):
            p[i], bb = sgd_rule(p[i], g[i], b[i if full else 0], c)
            if full:
                b[i] = bb


@kernel
def adagrad(ptrs, first, numel, like, c):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        p, g, s = (_tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like),
                   _tensor(ptrs, 2, t, n, like))
        for i in range(begin, end):
            p[i], s[i] = adagrad_rule(p[i], g[i], s[i], c)


@kernel
def rmsprop(ptrs, first, numel, like, c):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        p, g, s = (_tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like),
                   _tensor(ptrs, 2, t, n, like))
        b, ga = _tensor(ptrs, 3, t, n, like), _tensor(ptrs, 4, t, n, like)
        full_b, full_ga = ptrs[3, t] != 0, ptrs[4, t] != 0
        for i in range(begin, end):
            p[i], s[i], bb, gg = rmsprop_rule(p[i], g[i], s[i], b[i if full_b else 0],
                                              ga[i if full_ga else 0], c)
            if full_b:
                b[i] = bb
            if full_ga:
                ga[i] = gg


@kernel
def lion(ptrs, first, numel, like, c, cd):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        n = numel[t]
        p, g, m = (_tensor(ptrs, 0, t, n, like), _tensor(ptrs, 1, t, n, like),
                   _tensor(ptrs, 2, t, n, like))
        for i in range(begin, end):
            p[i], m[i] = lion_rule(p[i], g[i], m[i], c, cd)


@kernel
def scale(ptrs, first, numel, like, coef):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        for i in range(begin, end):
            x[i] = x[i] * coef


@kernel
def clamp(ptrs, first, numel, like, lo, hi):
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        for i in range(begin, end):
            x[i] = clamp_rule(x[i], lo, hi)


@kernel
def norm_partials(ptrs, first, numel, like, kind, p, out):
    # kind: 0 l2, 1 l1, 2 linf, 3 lp; one float64 partial per chunk
    for ch in prange(first[-1]):
        t, begin, end = _chunk(first, numel, ch)
        x = _tensor(ptrs, 0, t, numel[t], like)
        acc = 0.0
        for i in range(begin, end):
            a = abs(np.float64(x[i]))
            if kind == 0:
                acc += a * a
            elif kind == 1:
                acc += a
            elif kind == 2:
                acc = a if (a > acc or a != a) else acc
            else:
                acc += a**p
        out[ch] = acc


KERNELS = dict(adam=adam, sgd=sgd, adagrad=adagrad, rmsprop=rmsprop, lion=lion, scale=scale,
               clamp=clamp, norm_partials=norm_partials)
