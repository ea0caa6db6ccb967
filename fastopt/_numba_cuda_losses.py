"""The `numba_cuda` backend's loss kernels: the rules of fastopt._numba_losses compiled with
numba.cuda.jit. Imported only when the backend first computes a loss; under
NUMBA_ENABLE_CUDASIM=1 the same kernels run in Numba's CUDA simulator.

Every sum is deterministic: a fixed element -> thread map, per-thread float64 sums in element
order, then a fixed-shape tree in shared memory (no atomics); the host adds the per-block (or
per-row) results. Math is float64 whatever the storage dtype, as in the CPU kernels.

Not cached on disk: the kernels inline rules from another file, which Numba's cache would not
see change.
"""

import math

from numba import cuda, float64

from . import _numba_losses as L

BLOCK = 256  # threads per block: the width of the shared-memory trees

device = cuda.jit(device=True, inline=True)
element = device(L.element_rule(device(L.point_loss)))
_capped = device(L.capped)
_ce_class_grad = device(L.ce_class_grad)


@device
def block_reduce(acc, t, nan_max):
    """acc[0] = the sum, or with nan_max the NaN-sticky max, of the block's shared array acc
    (one value per thread t; a power-of-two length), folded in a fixed-shape tree: at width
    len/2, ..., 1 thread t < width combines acc[t] with acc[t + width], so the result has the
    same bits on every run. Every thread of the block must call it."""
    cuda.syncthreads()
    width = acc.shape[0] // 2
    while width > 0:
        if t < width:
            u = acc[t]
            w = acc[t + width]
            if nan_max:
                acc[t] = u if (u > w or u != u) else w
            else:
                acc[t] = u + w
        cuda.syncthreads()
        width //= 2


@cuda.jit
def elementwise(x, kind, y, w, wp, pw, pp, grad, has_g, out, has_out, param, scale, partials):
    """Grid-stride over the elements: scale w dloss/dx to grad, w loss to out (has_out), and
    one loss sum per block to partials[block]."""
    acc = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    a = 0.0
    i = cuda.blockIdx.x * BLOCK + t
    stride = cuda.gridDim.x * BLOCK
    while i < x.size:
        a += element(i, x, kind, y, w, wp, pw, pp, grad, has_g, out, has_out, param, scale)
        i += stride
    acc[t] = a
    block_reduce(acc, t, False)
    if t == 0:
        partials[cuda.blockIdx.x] = acc[0]


@cuda.jit
def cross_entropy(x, tidx, probs, tprob, w, has_w, wsum, grad, has_g, n, c, inner,
                  ignore_index, eps, z, cap, scale, rows):
    """One block per row (grid-stride over rows), the classes strided over its threads: the
    sweeps of fastopt._numba_losses.ce_row with shared-memory trees for the max and the sums."""
    mx = cuda.shared.array(BLOCK, float64)
    s_acc = cuda.shared.array(BLOCK, float64)
    a_acc = cuda.shared.array(BLOCK, float64)
    t_acc = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    keep = 1.0 - eps
    spread = eps / c
    i = cuda.blockIdx.x
    while i < n:
        base = (i // inner) * c * inner + i % inner
        y = 0
        ignored = False
        if not probs:
            y = tidx[i]
            ignored = y == ignore_index
        if ignored:
            if has_g:
                for j in range(t, c, BLOCK):
                    grad[base + j * inner] = 0.0
            if t == 0:
                rows[i] = 0.0
            i += cuda.gridDim.x
            continue
        # the target's logit, read before the first barrier: in place, the thread that owns
        # class y overwrites it once the sums are done
        sy = 0.0 if probs else _capped(float64(x[base + y * inner]), cap)
        m = -math.inf
        for j in range(t, c, BLOCK):
            s = _capped(float64(x[base + j * inner]), cap)
            if s > m or s != s:
                m = s
        mx[t] = m
        block_reduce(mx, t, True)
        m = mx[0]
        finite = m > -math.inf and m < math.inf
        wy = 0.0
        if not probs:
            wy = float64(w[y]) if has_w else 1.0
        big_s = 0.0
        a = 0.0
        tx = 0.0
        if finite:
            for j in range(t, c, BLOCK):
                k = base + j * inner
                d = _capped(float64(x[k]), cap) - m
                big_s += math.exp(d)
                wj = float64(w[j]) if has_w else 1.0
                if probs:
                    tj = wj * (keep * float64(tprob[k]) + spread)
                    a += tj
                    tx += tj * d
                elif spread > 0.0:
                    tx += spread * wj * d
        s_acc[t] = big_s
        a_acc[t] = a
        t_acc[t] = tx
        block_reduce(s_acc, t, False)
        block_reduce(a_acc, t, False)
        block_reduce(t_acc, t, False)
        big_s = s_acc[0]
        a = a_acc[0]
        tx = t_acc[0]
        if not probs:
            a = keep * wy + spread * wsum
            tx += keep * wy * (sy - m)
        lse = m + math.log(big_s) if finite else math.nan
        if has_g:
            coef = scale * (a + 2.0 * z * lse) / big_s if finite else math.nan
            for j in range(t, c, BLOCK):
                k = base + j * inner
                wj = float64(w[j]) if has_w else 1.0
                if probs:
                    tj = wj * (keep * float64(tprob[k]) + spread)
                else:
                    tj = spread * wj + (keep * wy if j == y else 0.0)
                s = _capped(float64(x[k]), cap)
                grad[k] = _ce_class_grad(s, m, coef, scale, tj, cap) if finite else math.nan
        if t == 0:
            rows[i] = a * math.log(big_s) - tx + z * lse * lse if finite else math.nan
        cuda.syncthreads()  # the shared sums are reused by the next row
        i += cuda.gridDim.x
