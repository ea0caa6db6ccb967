"""Bitwise the same results for any thread count; every compiled ISA agrees with the reference."""

import numpy as np
import pytest
from trajectories import against_reference, grad_stream, initial_params

import fastopt
from fastopt.clip import clip_grad_norm_
from fastopt.optim import SGD, Adagrad, Adam, Lion, RMSprop

_C = pytest.importorskip("fastopt._C")

# several chunks per tensor, and more chunks than threads
SHAPES = [(1,), (70001,), (300, 257), (5,), (40000,)]
OPTIMIZERS = [
    (SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    (Adam, {"amsgrad": True, "weight_decay": 0.1}),
    (Adagrad, {"lr_decay": 0.1}),
    (RMSprop, {"centered": True, "momentum": 0.9}),
    (Lion, {"weight_decay": 0.1}),
]


@pytest.fixture
def restore_threads():
    before = fastopt.get_num_threads()
    yield
    fastopt.set_num_threads(before)


def _run(cls, options, threads, dtype):
    fastopt.set_num_threads(threads)
    params = initial_params(SHAPES, dtype)
    opt = cls(params, backend="cpu", **options)
    for g in grad_stream(SHAPES, dtype, 5):
        opt.step(g)
    return params


@pytest.mark.parametrize("cls,options", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizers_bitwise_for_any_thread_count(cls, options, dtype, restore_threads):
    one, two, three = (_run(cls, options, t, dtype) for t in (1, 2, 3))
    for a, b, c in zip(one, two, three, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_bitwise_for_any_thread_count(norm_type, dtype, restore_threads):
    results = []
    for threads in (1, 2, 3):
        fastopt.set_num_threads(threads)
        grads = next(grad_stream(SHAPES, dtype, 1))
        norm = clip_grad_norm_(grads, 1.0, norm_type, backend="cpu")
        results.append((norm, grads))
    for norm, grads in results[1:]:
        assert norm == results[0][0]
        for a, b in zip(grads, results[0][1], strict=True):
            np.testing.assert_array_equal(a, b)


def test_thread_count_is_settable_and_validated(restore_threads):
    fastopt.set_num_threads(1)
    assert fastopt.get_num_threads() == 1
    with pytest.raises(ValueError, match=">= 1"):
        fastopt.set_num_threads(0)


def _supported_isas():
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


def test_unsupported_isa_is_refused():
    with pytest.raises(ValueError, match="unknown ISA"):
        _C.set_isa("sse9")
    if _C.widest_isa() != "avx512":
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _C.set_isa("avx512")
