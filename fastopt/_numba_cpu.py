"""The Numba CPU kernels: fastopt._numba_rules compiled with @njit(parallel=True, cache=True).
Imported only when the `numba` backend first runs (importing numba takes a second). Kernels
are module-level functions so that Numba's on-disk cache finds them again in a new process.
"""

import numpy as np
from numba import njit, prange
from numba.core import caching

from . import _numba_rules as R

R.track_rules_in_cache(caching)

CHUNK = 1 << 14  # elements per partial sum of a norm (fixed: any thread count, same bits)

rule = njit(cache=True, error_model="numpy")
adam_rule = rule(R.adam_rule)
sgd_rule = rule(R.sgd_rule)
adagrad_rule = rule(R.adagrad_rule)
rmsprop_rule = rule(R.rmsprop_rule)
lion_rule = rule(R.lion_rule)
clamp_rule = rule(R.clamp_rule)
kernel = njit(parallel=True, cache=True, error_model="numpy", fastmath=False)


@kernel
def adam(p, g, m, v, vmax, c):
    for i in prange(p.size):
        k = min(np.int64(i), vmax.size - 1)
        r = adam_rule(p[i], g[i], m[i], v[i], vmax[k], c)
        p[i] = r[0]
        m[i] = r[1]
        v[i] = r[2]
        if vmax.size == p.size:
            vmax[i] = r[3]


@kernel
def sgd(p, g, b, c):
    for i in prange(p.size):
        j = min(np.int64(i), b.size - 1)
        p[i], bb = sgd_rule(p[i], g[i], b[j], c)
        if b.size == p.size:
            b[i] = bb


@kernel
def adagrad(p, g, s, c):
    for i in prange(p.size):
        p[i], s[i] = adagrad_rule(p[i], g[i], s[i], c)


@kernel
def rmsprop(p, g, s, b, ga, c):
    for i in prange(p.size):
        jb = min(np.int64(i), b.size - 1)
        jg = min(np.int64(i), ga.size - 1)
        p[i], s[i], bb, gg = rmsprop_rule(p[i], g[i], s[i], b[jb], ga[jg], c)
        if b.size == p.size:
            b[i] = bb
        if ga.size == p.size:
            ga[i] = gg


@kernel
def lion(p, g, m, c, cd):
    for i in prange(p.size):
        p[i], m[i] = lion_rule(p[i], g[i], m[i], c, cd)


@kernel
def scale(x, coef):
    for i in prange(x.size):
        x[i] = x[i] * coef


@kernel
def clamp(x, lo, hi):
    for i in prange(x.size):
        x[i] = clamp_rule(x[i], lo, hi)


@kernel
def norm_partials(x, kind, p, out):
    # kind: 0 l2, 1 l1, 2 linf, 3 lp; one float64 partial per chunk, in a fixed order
    n_chunks = out.size
    for k in prange(n_chunks):
        acc = 0.0
        for i in range(k * 16384, min((k + 1) * 16384, x.size)):
            a = abs(np.float64(x[i]))
            if kind == 0:
                acc += a * a
            elif kind == 1:
                acc += a
            elif kind == 2:
                acc = a if (a > acc or a != a) else acc
            else:
                acc += a**p
        out[k] = acc


KERNELS = dict(adam=adam, sgd=sgd, adagrad=adagrad, rmsprop=rmsprop, lion=lion, scale=scale,
               clamp=clamp, norm_partials=norm_partials)
