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
from numba_cuda_sim_check import SimArray as _Sim  # noqa: E402
from tolerances import assert_close  # noqa: E402

from fastopt import losses  # noqa: E402
from fastopt import reference as ref  # noqa: E402

ELEMENTWISE = [("mse", losses.mse_loss, ref.mse_loss, {}),
               ("l1", losses.l1_loss, ref.l1_loss, {}),
               ("huber", losses.huber_loss, ref.huber_loss, dict(delta=0.7)),
               ("smooth_l1", losses.smooth_l1_loss, ref.smooth_l1_loss, dict(beta=0.5)),
               ("bce", losses.binary_cross_entropy, ref.binary_cross_entropy, {}),
               ("bce_logits", losses.binary_cross_entropy_with_logits,
                ref.binary_cross_entropy_with_logits, {}),
               ("kl_div", losses.kl_div, ref.kl_div, {}),
               ("kl_div_log_target", losses.kl_div, ref.kl_div, dict(log_target=True))]
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
    failures = []
    checks = 0

    def check(actual, expected, dtype, what):
        nonlocal checks
        checks += 1
        try:
            assert_close(loss_value(actual), expected, dtype, what)
        except AssertionError as exc:
            failures.append(str(exc))

    rng = np.random.default_rng(0)
    dtypes, reductions = ("float32", "float64"), ("mean", "sum", "none")
    # about a second per launch in the simulator: each loss once, the dtypes, reductions and
    # sizes (one block, two blocks of 256 threads) spread over them
    for i, (name, fn, rfn, kw) in enumerate(ELEMENTWISE):
        dtype, reduction = dtypes[i % 2], reductions[i % 3]
        shape = ((7,), (3, 97))[(i // 2) % 2]
        x = rng.standard_normal(shape) * 2
        y = rng.standard_normal(shape)
        if name == "bce":
            x, y = rng.random(shape), rng.random(shape)
        elif name in ("bce_logits", "kl_div"):
            y = rng.random(shape)
        if name == "kl_div":
            x = np.log(rng.random(shape) + 1e-3)
        x, y = x.astype(dtype), y.astype(dtype)
        extra = {}
        if name in ("bce", "bce_logits"):
            extra["weight"] = (rng.random(shape[-1:]) + 0.5).astype(dtype)
        if name == "bce_logits":
            extra["pos_weight"] = (rng.random(shape[-1:]) * 3).astype(dtype)
        what = f"{name} {dtype} {shape} {reduction}"
        sim = {k: SimArray(v) for k, v in extra.items()}
        loss, grad = fn(SimArray(x), SimArray(y), reduction=reduction, **kw, **sim)
        rloss, rgrad = rfn(x, y, reduction=reduction, **kw, **extra)
        check(loss, rloss, dtype, what + " loss")
        check(to_host(grad), rgrad, dtype, what + " grad")
    for i, opts in enumerate(CE_OPTIONS):
        for j, (n, c) in enumerate(((1, 1), (4, 7), (2, 300))):  # 300: more classes than threads
            if (i + j) % 2 and c != 300:
                continue
            dtype, reduction = dtypes[(i + j) % 2], reductions[(i + j) % 3]
            x = (rng.standard_normal((n, c)) * 3).astype(dtype)
            if opts.get("probs"):
                p = rng.random((n, c))
                t = (p / p.sum(1, keepdims=True)).astype(dtype)
            else:
                t = rng.integers(0, c, n)
                if opts.get("ignore"):
                    t[::2] = -100
            w = (rng.random(c) + 0.5).astype(dtype) if opts.get("weight") else None
            kw = {k: v for k, v in opts.items() if k in ("label_smoothing", "z_loss", "softcap")}
            what = f"cross_entropy {dtype} {(n, c)} {opts} {reduction}"
            sw = None if w is None else SimArray(w)
            inplace = i % 2 == 1
            logits = SimArray(x.copy())  # the simulator writes x in place
            loss, grad = losses.cross_entropy(logits, SimArray(t), sw, reduction=reduction,
                                              inplace=inplace, **kw)
            rloss, rgrad = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
            check(loss, rloss, dtype, what + " loss")
            check(to_host(grad), rgrad, dtype, what + " grad")
            if inplace and grad is not logits:
                failures.append(what + ": inplace=True did not return the logits")
    try:
        losses.cross_entropy(SimArray(np.zeros((2, 3), np.float32)), SimArray(np.array([0, 3])))
        failures.append("an out-of-range class index did not raise")
    except ValueError as exc:
        if "class index 3 at row 1" not in str(exc):
            failures.append(f"unclear out-of-range error: {exc}")
    for f in failures:
        print(f, file=sys.stderr)
    print(f"numba_cuda losses (simulator): {checks - len(failures)}/{checks} arrays match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
