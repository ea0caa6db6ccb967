"""The Numba-CUDA kernels: fastopt._numba_rules compiled with numba.cuda.jit (device functions
inlined into one grid-stride kernel per optimizer). Imported only when the `numba_cuda` backend
first runs; under NUMBA_ENABLE_CUDASIM=1 the same kernels run in Numba's CUDA simulator.
"""

from numba import cuda, float64

from . import _numba_rules as R

if not cuda.config.ENABLE_CUDASIM:  # the simulator has no on-disk cache
    from numba.cuda.core import caching

    R.track_rules_in_cache(caching)

BLOCK = 256  # threads per block; also the norm's shared-memory tree width

device = cuda.jit(device=True, inline=True)
adam_rule = device(R.adam_rule)
sgd_rule = device(R.sgd_rule)
adagrad_rule = device(R.adagrad_rule)
rmsprop_rule = device(R.rmsprop_rule)
lion_rule = device(R.lion_rule)
clamp_rule = device(R.clamp_rule)
kernel = cuda.jit(cache=True)


@kernel
def adam(p, g, m, v, vmax, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    full = vmax.size == p.size
    while i < p.size:
        r = adam_rule(p[i], g[i], m[i], v[i], vmax[i if full else 0], c)
        p[i] = r[0]
        m[i] = r[1]
        v[i] = r[2]
        if full:
            vmax[i] = r[3]
        i += stride


@kernel
def sgd(p, g, b, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    full = b.size == p.size
    while i < p.size:
        r = sgd_rule(p[i], g[i], b[i if full else 0], c)
        p[i] = r[0]
        if full:
            b[i] = r[1]
        i += stride


@kernel
def adagrad(p, g, s, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < p.size:
        r = adagrad_rule(p[i], g[i], s[i], c)
        p[i] = r[0]
        s[i] = r[1]
        i += stride


@kernel
def rmsprop(p, g, s, b, ga, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    full_b = b.size == p.size
    full_ga = ga.size == p.size
    while i < p.size:
        r = rmsprop_rule(p[i], g[i], s[i], b[i if full_b else 0], ga[i if full_ga else 0], c)
        p[i] = r[0]
        s[i] = r[1]
        if full_b:
            b[i] = r[2]
        if full_ga:
            ga[i] = r[3]
        i += stride


@kernel
def lion(p, g, m, c, cd):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < p.size:
        r = lion_rule(p[i], g[i], m[i], c, cd)
        p[i] = r[0]
        m[i] = r[1]
        i += stride


@kernel
def scale(x, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        x[i] = x[i] * c[0]
        i += stride


@kernel
def clamp(x, c):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        x[i] = clamp_rule(x[i] * c[2], c[0], c[1])
        i += stride


@kernel
def norm_partials(x, kind, p, out):
    # one float64 partial per block: a fixed element -> thread map and a fixed-shape tree in
    # shared memory, so the bits never depend on scheduling (no atomics)
    acc = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    a = 0.0
    i = cuda.blockIdx.x * BLOCK + t
    stride = cuda.gridDim.x * BLOCK
    while i < x.size:
        e = abs(float64(x[i]))
        if kind == 0:
            a += e * e
        elif kind == 1:
            a += e
        elif kind == 2:
            a = e if (e > a or e != e) else a
        else:
            a += e**p
        i += stride
    acc[t] = a
    cuda.syncthreads()
    width = BLOCK // 2
    while width > 0:
        if t < width:
            u = acc[t]
            w = acc[t + width]
            if kind == 2:
                acc[t] = u if (u > w or u != u) else w
            else:
                acc[t] = u + w
        cuda.syncthreads()
        width //= 2
    if t == 0:
        out[cuda.blockIdx.x] = acc[0]


KERNELS = dict(adam=adam, sgd=sgd, adagrad=adagrad, rmsprop=rmsprop, lion=lion, scale=scale,
               clamp=clamp, norm_partials=norm_partials)
