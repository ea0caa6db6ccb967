"""Bitwise the same results for any thread count (optimizers, norms, every loss and reduction,
linear_cross_entropy); every compiled ISA agrees with the reference."""

import contextlib

import numpy as np
import pytest
from conftest import backend_params
from trajectories import against_reference, grad_stream, initial_params

import fastopt
from fastopt import functional, losses
from fastopt.clip import clip_grad_norm_
from fastopt.optim import SGD, Adagrad, Adam, Lion, RMSprop

try:
    from fastopt import _C
except ImportError:
    _C = None
needs_C = pytest.mark.skipif(_C is None, reason="fastopt._C is not built (the cpu backend's "
                             "threads, ISAs and loss kernels)")

# several chunks per tensor, and more chunks than threads
SHAPES = [(1,), (70001,), (300, 257), (5,), (40000,)]
OPTIMIZERS = [
    (SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    (Adam, {"amsgrad": True, "weight_decay": 0.1}),
    (Adagrad, {"lr_decay": 0.1}),
    (RMSprop, {"centered": True, "momentum": 0.9}),
    (Lion, {"weight_decay": 0.1}),
]
THREADS = (1, 2, 3)


def test_every_optimizer_kernel_is_covered():
    assert sorted(cls.op for cls, _ in OPTIMIZERS) == sorted(functional.SLOTS)


@contextlib.contextmanager
def threads(backend: str, n: int):
    """Run `backend`'s kernels on n threads (as many as it may use, for Numba)."""
    if backend == "numba":
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(before)
    else:
        before = fastopt.get_num_threads()
        fastopt.set_num_threads(n)
        try:
            yield
        finally:
            fastopt.set_num_threads(before)


def _each_thread_count(backend, fn):
    """fn() under 1, 2 and 3 threads; the results, which must all be equal."""
    out = []
    for n in THREADS:
        with threads(backend, n):
            out.append(fn())
    return out


def _assert_all_equal(results):
    first = results[0]
    for other in results[1:]:
        for a, b in zip(first, other, strict=True):
            if isinstance(a, float):
                assert a == b or (a != a and b != b)
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("cls,options", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
def test_optimizers_bitwise_for_any_thread_count(backend, cls, options, dtype):
    def run():
        params = initial_params(SHAPES, dtype)
        opt = cls(params, backend=backend, **options)
        for g in grad_stream(SHAPES, dtype, 5):
            opt.step(g)
        return params

    _assert_all_equal(_each_thread_count(backend, run))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
def test_norm_bitwise_for_any_thread_count(backend, norm_type, dtype):
    def run():
        grads = next(grad_stream(SHAPES, dtype, 1))
        return [clip_grad_norm_(grads, 1.0, norm_type, backend=backend), *grads]

    _assert_all_equal(_each_thread_count(backend, run))


def _inputs(name, dtype):
    """input, target and keyword arguments of each element-wise loss: 70001 elements, several
    chunks per thread."""
    rng = np.random.default_rng(3)
    n = 70001
    x, y = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    w = rng.uniform(0.5, 2.0, n).astype(dtype)
    if name == "binary_cross_entropy":
        return rng.uniform(0.01, 0.99, n).astype(dtype), rng.uniform(0, 1, n).astype(dtype), \
            {"weight": w}
    if name == "binary_cross_entropy_with_logits":
        x, y = rng.standard_normal((7001, 10)).astype(dtype), rng.uniform(0, 1, (7001, 10))
        return x, y.astype(dtype), {"weight": w[:10].copy(), "pos_weight": w[10:20].copy()}
    if name == "kl_div":
        return np.log(rng.uniform(0.01, 1, n)).astype(dtype), \
            rng.uniform(0, 1, n).astype(dtype), {}
    return x, y, {"huber_loss": {"delta": 0.7}, "smooth_l1_loss": {"beta": 0.3}}.get(name, {})


#: name -> reductions of every element-wise loss (cross_entropy and linear_cross_entropy have
#: their own tests below; together they are losses.__all__, checked below)
ELEMENTWISE = {name: ("none", "mean", "sum") for name in
               ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
                "binary_cross_entropy_with_logits")}
ELEMENTWISE["kl_div"] = ("none", "mean", "sum", "batchmean")


def test_every_loss_is_covered():
    assert set(ELEMENTWISE) | {"cross_entropy", "linear_cross_entropy"} == set(losses.__all__)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_losses_bitwise_for_any_thread_count(name, dtype, backend):
    x, y, kw = _inputs(name, dtype)
    fn = getattr(losses, name)
    for reduction in ELEMENTWISE[name]:
        _assert_all_equal(_each_thread_count(backend, lambda r=reduction: fn(
            x, y, reduction=r, backend=backend, **kw)))


@needs_C
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_bitwise_for_any_thread_count(reduction, dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((513, 1000)) * 3).astype(dtype)
    t = rng.integers(0, 1000, 513)
    t[::7] = -100
    w = rng.uniform(0.5, 2.0, 1000).astype(dtype)
    _assert_all_equal(_each_thread_count("cpu", lambda: losses.cross_entropy(
        x, t, w, reduction=reduction, label_smoothing=0.1, z_loss=1e-4)))


@needs_C
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cross_entropy_bitwise_for_any_thread_count(reduction, dtype):
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((150, 32)).astype(dtype)
    weight = (rng.standard_normal((1201, 32)) / 6).astype(dtype)
    bias = rng.standard_normal(1201).astype(dtype)
    target = rng.integers(0, 1201, 150)
    target[::5] = -100
    # chunks of 64 x 1201 logits: each one several threads' work
    _assert_all_equal(_each_thread_count("cpu", lambda: losses.linear_cross_entropy(
        hidden, weight, target, bias, reduction=reduction, label_smoothing=0.05,
        chunk_size=64)))


@needs_C
def test_thread_count_is_settable_and_validated():
    before = fastopt.get_num_threads()
    try:
        for n in (1, 3, 2):
            fastopt.set_num_threads(n)
            assert fastopt.get_num_threads() == n
        with pytest.raises(ValueError, match=">= 1"):
            fastopt.set_num_threads(0)
    finally:
        fastopt.set_num_threads(before)


def _supported_isas():
    if _C is None:
        return [pytest.param("none", marks=needs_C)]
    order = ["baseline", "avx2", "avx512"]
    return [isa for isa in _C.compiled_isas() if order.index(isa) <= order.index(_C.widest_isa())]


@pytest.mark.parametrize("isa", _supported_isas())
@pytest.mark.parametrize("cls,options", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_isa_matches_the_reference(isa, cls, options):
    before = _C.isa()
    _C.set_isa(isa)
    try:
        assert _C.isa() == isa
        for dtype in (np.float32, np.float64):
            against_reference(cls, options, "cpu", dtype, [(1,), (7,), (4097,), (33, 17)],
                              steps=30)
    finally:
        _C.set_isa(before)


@needs_C
def test_unsupported_isa_is_refused():
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")
    if _C.widest_isa() != "avx512":
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _C.set_isa("avx512")
