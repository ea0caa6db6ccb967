"""Bitwise the same results for any thread count (norms, every loss and reduction,
linear_cross_entropy; every optimizer: tests/test_optim_db.py); every compiled ISA agrees with
the reference."""

import numpy as np
import pytest
from conftest import backend_params
from optim_db import DB
from trajectories import against_reference, each_thread_count, grad_stream

import fastopt
from fastopt import losses
from fastopt.clip import clip_grad_norm_

try:
    from fastopt import _C
except ImportError:
    _C = None
needs_C = pytest.mark.skipif(_C is None, reason="fastopt._C is not built (the cpu backend's "
                             "threads, ISAs and loss kernels)")

# several chunks per tensor, and more chunks than threads
SHAPES = [(1,), (70001,), (300, 257), (5,), (40000,)]


def _assert_all_equal(results):
    first = results[0]
    for other in results[1:]:
        for a, b in zip(first, other, strict=True):
            if isinstance(a, float):
                assert a == b or (a != a and b != b)
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", backend_params())
def test_norm_bitwise_for_any_thread_count(backend, norm_type, dtype):
    def run():
        grads = next(grad_stream(SHAPES, dtype, 1))
        return [clip_grad_norm_(grads, 1.0, norm_type, backend=backend), *grads]

    _assert_all_equal(each_thread_count(backend, run))


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
        _assert_all_equal(each_thread_count(backend, lambda r=reduction: fn(
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
    _assert_all_equal(each_thread_count("cpu", lambda: losses.cross_entropy(
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
    _assert_all_equal(each_thread_count("cpu", lambda: losses.linear_cross_entropy(
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
@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in DB])
def test_every_isa_matches_the_reference(isa, entry):
    """Each optimizer's option set with the most state, every option set with L1."""
    before = _C.isa()
    _C.set_isa(isa)
    try:
        assert _C.isa() == isa
        for options in entry.options:
            if options is not entry.full and not options.get("l1"):
                continue
            for dtype in (np.float32, np.float64):
                against_reference(entry.optim_class, options, "cpu", dtype,
                                  [(1,), (7,), (4097,), (33, 17)], steps=30)
    finally:
        _C.set_isa(before)


@needs_C
def test_unsupported_isa_is_refused():
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")
    if _C.widest_isa() != "avx512":
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _C.set_isa("avx512")
