"""The Numba-CUDA kernels: one driver template, `optimizer_kernel(spec)`, compiles the rule of
fastopt/ops/<op>.py with numba.cuda.jit (device functions inlined into one kernel per
optimizer, named `step_<op>` for the on-disk cache). Imported only when the `numba_cuda`
backend first runs; under NUMBA_ENABLE_CUDASIM=1 the same kernels run in Numba's CUDA
simulator. The frame around each rule is fastopt.ops's (frame_grad, frame_param), as in the
CPU template (_numba_cpu.py).

Every kernel is one launch over a whole pointer table. Its metadata, one int64 array per
launch: the table's pointers (`ptrs[row * n + t]`, 0 for a missing optional row), the block
starts `first` (`first[t]` = tensor t's first block, `first[n]` = the grid size) and each
tensor's element count. Tensor t gets `first[t+1] - first[t]` blocks (as many as 256-thread
blocks cover it, capped) that stride over it exactly as a launch on that tensor alone would:
the norm partials are the same as per-tensor launches', whatever the number of tensors.
"""

from numba import cuda, float64

from .. import ops
from .._numba_cuda_losses import block_reduce
from ..ops import DECAY, ONE
from . import _numba_common
from ._numba_common import pointer_intrinsic, track_rules_in_cache

if not cuda.config.ENABLE_CUDASIM:  # the simulator has no on-disk cache
    from numba.cuda import types
    from numba.cuda.core import caching
    from numba.cuda.extending import intrinsic

    track_rules_in_cache(caching)
    _as_pointer = pointer_intrinsic(intrinsic, types)

    @intrinsic
    def _data(typingctx, like):
        """The data pointer of the array `like`."""
        sig = types.CPointer(like.dtype)(like)

        def codegen(context, builder, signature, args):
            return context.make_array(signature.args[0])(context, builder, args[0]).data

        return sig, codegen

    def _tensor(ptrs, numel, row, t, like):
        """Row `row`, tensor t of the table, as a pointer indexed like an array; a missing
        entry (address 0: an optional state row such as AMSGrad's max_exp_avg_sq, or a row
        past the table's) is `like`, a 1-element dummy. (Device functions are inlined and
        no carray is made: either would compile for the current GPU, which compile_ptx and a
        GPU-less machine do not have.)"""
        if row * numel.size >= ptrs.size:
            return _data(like)
        addr = ptrs[row * numel.size + t]
        return _data(like) if addr == 0 else _as_pointer(addr, like)
else:  # simulated device memory is host memory, and the kernels run as Python
    from .._arrays import cpu_view

    def _tensor(ptrs, numel, row, t, like):
        if row * numel.size >= ptrs.size:
            return like
        addr = ptrs[row * numel.size + t]
        return like if addr == 0 else cpu_view(int(addr), int(numel[t]), like.dtype.name)

BLOCK = 256  # threads per block; also the norm's shared-memory tree width

device = cuda.jit(device=True, inline=True)
frame_grad, frame_param = device(ops.frame_grad), device(ops.frame_param)
norm_term = device(_numba_common.norm_term)
_tensor = device(_tensor)
kernel = cuda.jit(cache=True)


@device
def _block(first):
    """(tensor, this block's index among the tensor's blocks, the tensor's block count) of
    this block: a binary search of the block starts."""
    g = cuda.blockIdx.x
    lo = 0
    hi = first.size - 1
    while hi - lo > 1:  # first[lo] <= g < first[hi]
        mid = (lo + hi) // 2
        if first[mid] <= g:
            lo = mid
        else:
            hi = mid
    return lo, g - first[lo], first[lo + 1] - first[lo]


def _optimizer(ptrs, first, numel, like, c):
    t, b, nb = _block(first)
    x = (_tensor(ptrs, numel, 0, t, like), _tensor(ptrs, numel, 1, t, like),
         _tensor(ptrs, numel, 2, t, like), _tensor(ptrs, numel, 3, t, like),
         _tensor(ptrs, numel, 4, t, like), _tensor(ptrs, numel, 5, t, like))
    i = b * BLOCK + cuda.threadIdx.x
    while i < numel[t]:
        p = x[0][i] * c[ONE]
        g = frame_grad(p, x[1][i] * c[ONE], c)
        # op_rule: a global of each compiled copy (optimizer_kernel)
        x[0][i] = frame_param(op_rule(x, i, p * c[DECAY], g, c), c)  # noqa: F821
        i += nb * BLOCK


def optimizer_kernel(spec):
    """The driver compiled around `spec.rule` (a device function inlined into it)."""
    return _numba_common.optimizer_kernel(_optimizer, globals(), spec, device, kernel)


@kernel
def clamp(ptrs, first, numel, like, c):
    # x = clamp(x * c[2], c[0], c[1]), NaN kept: scaling (infinite bounds) and clipping (c[2] 1)
    t, b, nb = _block(first)
    x = _tensor(ptrs, numel, 0, t, like)
    i = b * BLOCK + cuda.threadIdx.x
    while i < numel[t]:
        v = x[i] * c[2]
        if v < c[0]:
            v = c[0]
        elif v > c[1]:
            v = c[1]
        x[i] = v
        i += nb * BLOCK


@kernel
def norm_partials(ptrs, first, numel, like, kind, p, out):
    # one float64 partial per block: a fixed element -> thread map and a fixed-shape tree in
    # shared memory, so the bits never depend on scheduling (no atomics)
    acc = cuda.shared.array(BLOCK, float64)
    tensor, b, nb = _block(first)
    x = _tensor(ptrs, numel, 0, tensor, like)
    t = cuda.threadIdx.x
    a = 0.0
    i = b * BLOCK + t
    stride = nb * BLOCK
    while i < numel[tensor]:
        a = norm_term(a, abs(float64(x[i])), kind, p)
        i += stride
    acc[t] = a
    block_reduce(acc, t, kind == 2)
    if t == 0:
        out[cuda.blockIdx.x] = acc[0]


KERNELS = dict(clamp=clamp, norm_partials=norm_partials)
