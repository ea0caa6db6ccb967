"""Runs the numba_cuda backend's loss kernels in Numba's CUDA simulator against the reference.

Started by tests/test_numba_cuda_sim.py in a fresh interpreter (NUMBA_ENABLE_CUDASIM must be
set before numba is first imported). The simulator runs every thread in Python, so the sizes
are tiny; they still cover odd sizes, several blocks of rows and more classes than threads.
Exits 1 on any mismatch.
"""

from __future__ import annotations

import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from loss_cases import ELEMENTWISE, ce_inputs, elementwise_inputs  # noqa: E402
from numba_cuda_sim_check import FULL, Checks  # noqa: E402
from numba_cuda_sim_check import SimArray as _Sim  # noqa: E402

from fastopt import losses  # noqa: E402
from fastopt import reference as ref  # noqa: E402

CE_OPTIONS = [{}, dict(weight=True, ignore=True, label_smoothing=0.2),
              dict(z_loss=1e-3, softcap=3.0, ignore=True), dict(probs=True),
              dict(probs=True, weight=True, label_smoothing=0.1, softcap=2.0, z_loss=1e-3)]


class SimArray(_Sim):
    """A simulated CUDA array that fastopt can also allocate like (through the array-API
    namespace hook of fastopt._arrays.empty_like)."""

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)

    def __array_namespace__(self):
        return _Namespace

    def __setitem__(self, key, value):
        self.host[key] = value


class _Namespace:
    float32, float64 = np.float32, np.float64

    @staticmethod
    def empty(shape, dtype):
        return SimArray(np.empty(shape, dtype))


def to_host(x):
    return x.host.copy()


def loss_value(x):
    return to_host(x) if isinstance(x, SimArray) else x


def main() -> int:
    check = Checks("numba_cuda losses (simulator)")
    rng = np.random.default_rng(0)
    dtypes, reductions = ("float32", "float64"), ("mean", "sum", "none")
    # about a second per launch in the simulator: each loss once, the dtypes, reductions and
    # sizes (one block, two blocks of 256 threads) spread over them
    for i, (name, (fname, kw)) in enumerate(ELEMENTWISE.items()):
        dtype, reduction = dtypes[i % 2], reductions[i % 3]
        shape = ((7,), (3, 97))[(i // 2) % 2]
        x, y, weights = elementwise_inputs(rng, name, shape, dtype)
        what = f"{name} {dtype} {shape} {reduction}"
        sim = {k: SimArray(v) for k, v in weights.items()}
        loss, grad = getattr(losses, fname)(SimArray(x), SimArray(y), reduction=reduction, **kw,
                                            **sim)
        rloss, rgrad = getattr(ref, fname)(x, y, reduction=reduction, **kw, **weights)
        check([("loss", loss_value(loss), rloss), ("grad", to_host(grad), rgrad)], dtype, what)
    # cross-entropy: each option set in one shape, the shapes taken in turn (FASTOPT_TEST_FULL=1:
    # in more of them)
    for i, opts in enumerate(CE_OPTIONS):
        for j, (n, c) in enumerate(((1, 1), (4, 7), (2, 300))):  # 300: more classes than threads
            if ((i + j) % 2 and c != 300) if FULL else j != (i + 2) % 3:
                continue
            dtype, reduction = dtypes[(i + j) % 2], reductions[(i + j) % 3]
            x, t, w, kw = ce_inputs(rng, (n, c), dtype, opts, ignore_every=2)
            what = f"cross_entropy {dtype} {(n, c)} {opts} {reduction}"
            sw = None if w is None else SimArray(w)
            inplace = i % 2 == 1
            logits = SimArray(x.copy())  # the simulator writes x in place
            loss, grad = losses.cross_entropy(logits, SimArray(t), sw, reduction=reduction,
                                              inplace=inplace, **kw)
            rloss, rgrad = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
            check([("loss", loss_value(loss), rloss), ("grad", to_host(grad), rgrad)], dtype,
                  what)
            if inplace and grad is not logits:
                check.failures.append(what + ": inplace=True did not return the logits")
    check.raises(lambda: losses.cross_entropy(SimArray(np.zeros((2, 3), np.float32)),
                                              SimArray(np.array([0, 3]))),
                 ValueError, "class index 3 at row 1", "an out-of-range class index")
    return check.report()


if __name__ == "__main__":
    sys.exit(main())
