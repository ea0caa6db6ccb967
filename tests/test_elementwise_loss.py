"""The element-wise losses of fastopt.losses against fastopt.reference and torch."""

import numpy as np
import pytest
from conftest import backend_params
from tolerances import assert_close

import fastopt
from fastopt import losses
from fastopt import reference as ref

DTYPES = [np.float32, np.float64]
SIZES = [(1,), (7,), (4097,), (65537,), (33, 17)]
REDUCTIONS = ["mean", "sum", "none"]


def data(kind, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    y = rng.standard_normal(shape) * 2
    if kind == "bce":
        x = rng.random(shape)
        x.flat[0] = 0.0  # log clamps at -100
        y = rng.random(shape)
    elif kind == "bce_logits":
        x = x * 20  # large |logits|
        y = rng.random(shape)
    elif kind in ("kl_div", "kl_log"):
        x = np.log(rng.random(shape) + 1e-3)
        y = rng.random(shape)
        y.flat[0] = 0.0  # xlogy(0, 0) = 0
    elif kind in ("huber", "smooth_l1"):
        y = x + rng.standard_normal(shape) * 1.5
    return x.astype(dtype), y.astype(dtype)


# name -> (fastopt function, reference function, kwargs, data kind)
LOSSES = {
    "mse": (losses.mse_loss, ref.mse_loss, {}, "mse"),
    "l1": (losses.l1_loss, ref.l1_loss, {}, "l1"),
    "huber": (losses.huber_loss, ref.huber_loss, dict(delta=0.7), "huber"),
    "smooth_l1": (losses.smooth_l1_loss, ref.smooth_l1_loss, dict(beta=0.5), "smooth_l1"),
    "smooth_l1_beta0": (losses.smooth_l1_loss, ref.smooth_l1_loss, dict(beta=0.0), "l1"),
    "bce": (losses.binary_cross_entropy, ref.binary_cross_entropy, {}, "bce"),
    "bce_logits": (losses.binary_cross_entropy_with_logits,
                   ref.binary_cross_entropy_with_logits, {}, "bce_logits"),
    "kl_div": (losses.kl_div, ref.kl_div, {}, "kl_div"),
    "kl_div_log_target": (losses.kl_div, ref.kl_div, dict(log_target=True), "kl_log"),
}


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(backend, dtype, shape, name, reduction):
    fn, rfn, kw, kind = LOSSES[name]
    x, y = data(kind, shape, dtype)
    loss, grad = fn(x, y, reduction=reduction, backend=backend, **kw)
    rloss, rgrad = rfn(x, y, reduction=reduction, **kw)
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_close(loss, rloss, dtype, "loss")
    assert_close(grad, rgrad, dtype, "grad")
    assert_close(fn(x, y, reduction=reduction, return_grad=False, **kw), rloss, dtype)


def test_kl_div_batchmean():
    x, y = data("kl_div", (8, 5), np.float64)
    for log_target in (False, True):
        loss, grad = losses.kl_div(x, y, "batchmean", log_target)
        rloss, rgrad = ref.kl_div(x, y, "batchmean", log_target)
        assert_close(loss, rloss)
        assert_close(grad, rgrad)


@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (13, 9), (3, 4, 5), (700, 3), (3, 4097)], ids=str)
def test_bce_weights_broadcast(dtype, shape, backend):
    """Weights repeat along the leading axes: short periods (3) wrap many times within a block
    of the CPU kernel, long ones (4097) straddle its blocks and chunks."""
    rng = np.random.default_rng(5)
    x, y = data("bce_logits", shape, dtype)
    p, _ = data("bce", shape, dtype)
    w = (rng.random(shape[-1:]) + 0.5).astype(dtype)
    pw = (rng.random(shape[-1:]) * 3).astype(dtype)
    wfull = (rng.random(shape) + 0.5).astype(dtype)
    for weight in (w, wfull):
        for reduction in REDUCTIONS:
            got = losses.binary_cross_entropy_with_logits(x, y, weight, reduction, pw,
                                                         backend=backend)
            want = ref.binary_cross_entropy_with_logits(x, y, weight, reduction, pw)
            assert_close(got[0], want[0], dtype)
            assert_close(got[1], want[1], dtype)
            got = losses.binary_cross_entropy(p, y, weight, reduction, backend=backend)
            want = ref.binary_cross_entropy(p, y, weight, reduction)
            assert_close(got[0], want[0], dtype)
            assert_close(got[1], want[1], dtype)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch(dtype, name, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn, _, kw, kind = LOSSES[name]
    x, y = data(kind, (31, 7), dtype, seed=1)
    # torch's semantics in float64 on the same inputs: its float32 kernels round more than
    # the tolerance table allows (e.g. (1 - y) x + max(-x, 0) cancels for large |x|)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64)
    tfn = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss,
           "smooth_l1": F.smooth_l1_loss, "smooth_l1_beta0": F.smooth_l1_loss,
           "bce": F.binary_cross_entropy, "bce_logits": F.binary_cross_entropy_with_logits,
           "kl_div": F.kl_div, "kl_div_log_target": F.kl_div}[name]
    out = tfn(xt, yt, reduction=reduction, **kw)
    out.sum().backward()
    loss, grad = fn(x, y, reduction=reduction, **kw)
    assert_close(loss, out.detach().numpy(), dtype, "loss")
    assert_close(grad, xt.grad.numpy(), dtype, "grad")


def test_bce_with_logits_pos_weight_matches_torch():
    torch = pytest.importorskip("torch")
    x, y = data("bce_logits", (40, 6), np.float64, seed=2)
    w = np.linspace(0.5, 2, 6)
    pw = np.linspace(0.1, 4, 6)
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), torch.tensor(w), pos_weight=torch.tensor(pw))
    out.backward()
    loss, grad = losses.binary_cross_entropy_with_logits(x, y, w, pos_weight=pw)
    assert_close(loss, out.item())
    assert_close(grad, xt.grad.numpy())


def test_torch_in_torch_out_and_determinism():
    torch = pytest.importorskip("torch")
    x, y = data("mse", (70001,), np.float32, seed=3)
    loss, grad = losses.mse_loss(torch.tensor(x), torch.tensor(y), reduction="none")
    assert isinstance(loss, torch.Tensor) and isinstance(grad, torch.Tensor)
    before = fastopt.get_num_threads()
    try:
        sums = []
        for n in (1, 2, 3):
            fastopt.set_num_threads(n)
            sums.append(losses.huber_loss(x, y, "sum")[0])
    finally:
        fastopt.set_num_threads(before)
    assert sums[0] == sums[1] == sums[2]


def test_nan_propagates():
    x, y = data("mse", (100,), np.float32)
    x[5] = np.nan
    for fn, rfn, kw, _ in LOSSES.values():
        if fn is losses.binary_cross_entropy:
            continue
        got, want = fn(x, y, reduction="none", **kw), rfn(x, y, reduction="none", **kw)
        assert_close(got[0], want[0], np.float32)
        assert_close(got[1], want[1], np.float32)


def test_bad_input():
    x, y = data("mse", (4, 3), np.float32)
    with pytest.raises(ValueError, match="target: shape"):
        losses.mse_loss(x, y[:2])
    with pytest.raises(TypeError, match="target: dtype"):
        losses.mse_loss(x, y.astype(np.float64))
    with pytest.raises(TypeError, match="input: dtype"):
        losses.l1_loss(x.astype(np.int32), y)
    with pytest.raises(ValueError, match="reduction"):
        losses.mse_loss(x, y, reduction="batchmean")
    with pytest.raises(ValueError, match="reduction"):
        losses.kl_div(x, y, reduction="avg")
    with pytest.raises(ValueError, match="input.*contiguous"):
        losses.mse_loss(np.ones((4, 6), np.float32)[:, ::2], y)
    with pytest.raises(ValueError, match="weight: shape"):
        losses.binary_cross_entropy_with_logits(x, y, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="pos_weight: shape"):
        losses.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="input: binary_cross_entropy needs probabilities"):
        losses.binary_cross_entropy(x, np.abs(y) / 10)
    with pytest.raises(ValueError, match="delta"):
        losses.huber_loss(x, y, delta=0.0)
    with pytest.raises(ValueError, match="beta"):
        losses.smooth_l1_loss(x, y, beta=-1.0)


GRAD_OUT_CASES = ["mse", "huber", "bce", "bce_logits", "kl_div", "kl_div_log_target"]


@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
@pytest.mark.parametrize("name", GRAD_OUT_CASES)
def test_grad_out_is_written_and_returned(name, backend):
    """grad_out= receives exactly the gradient a call without it allocates, for every reduction,
    NumPy arrays and torch tensors alike, and is the array returned."""
    fn, _, kw, kind = LOSSES[name]
    x, y = data(kind, (3, 4097), np.float32, seed=7)
    for reduction in REDUCTIONS:
        loss, grad = fn(x, y, reduction=reduction, backend=backend, **kw)
        buf = np.full_like(x, np.nan)
        got_loss, got = fn(x, y, reduction=reduction, grad_out=buf, backend=backend, **kw)
        assert got is buf
        np.testing.assert_array_equal(buf, grad)
        np.testing.assert_array_equal(got_loss, loss)
    torch = pytest.importorskip("torch")
    buf = torch.full(x.shape, float("nan"))
    _, got = fn(torch.tensor(x), torch.tensor(y), grad_out=buf, backend=backend, **kw)
    assert got is buf
    np.testing.assert_array_equal(buf.numpy(), fn(x, y, backend=backend, **kw)[1])


def test_grad_out_weighted():
    x, y = data("bce_logits", (9, 5), np.float32)
    w, pw = np.linspace(0.5, 2, 5, dtype=np.float32), np.linspace(0, 3, 5, dtype=np.float32)
    buf = np.empty_like(x)
    got = losses.binary_cross_entropy_with_logits(x, y, w, "sum", pw, grad_out=buf)
    want = ref.binary_cross_entropy_with_logits(x, y, w, "sum", pw)
    assert_close(got[0], want[0], np.float32)
    assert_close(buf, want[1], np.float32)


def test_grad_out_bad():
    x, y = data("bce_logits", (4, 6), np.float32)
    w = np.ones(6, np.float32)
    for bad, match, err in [
            (np.empty((4, 5), np.float32), r"grad_out: shape \[4, 5\] does not match", ValueError),
            (np.empty((4, 6), np.float64), "grad_out: dtype float64 does not match", TypeError),
            (np.empty((4, 6), np.int32), "grad_out: dtype int32 is not supported", TypeError),
            (np.empty((4, 12), np.float32)[:, ::2], "grad_out.*not C-contiguous", ValueError),
            (x, "grad_out: shares memory with input", ValueError),
            (y, "grad_out: shares memory with target", ValueError),
            (x.reshape(-1)[:24].reshape(4, 6), "shares memory with input", ValueError),
            ([0.0] * 24, "grad_out: expected an array", TypeError)]:
        with pytest.raises(err, match=match):
            losses.binary_cross_entropy_with_logits(x, y, grad_out=bad)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out: array is read-only"):
        losses.mse_loss(x, y, grad_out=ro)
    with pytest.raises(ValueError, match="grad_out: given with return_grad=False"):
        losses.mse_loss(x, y, return_grad=False, grad_out=np.empty_like(x))
    wide = np.zeros(30, np.float32)
    with pytest.raises(ValueError, match="grad_out: shares memory with weight"):
        losses.binary_cross_entropy_with_logits(x, y, wide[:6], grad_out=wide[5:29].reshape(4, 6))
    with pytest.raises(ValueError, match="grad_out: shares memory with pos_weight"):
        losses.binary_cross_entropy_with_logits(x, y, w, pos_weight=wide[23:29],
                                                grad_out=wide[:24].reshape(4, 6))
    # nothing was written by a refused call
    np.testing.assert_array_equal(wide, 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's inf * 0 and casts
@pytest.mark.parametrize("backend", backend_params())
def test_float32_math_at_the_ends_of_its_range(backend):
    """The float32 kernels compute e^x and log x with their own polynomials: they must match
    the reference at the ends too (0, 1, subnormals, huge and infinite logits, NaN)."""
    tiny, sub = np.finfo(np.float32).tiny, np.float32(1e-40)
    eps = np.finfo(np.float32).eps
    probs = np.array([0, sub, tiny, 1e-30, 1e-7, 0.5, 1 - eps, 1, 1, 0.3], np.float32)
    other = np.array([0.5, 1, 0, 0.2, 1, 0, 1, 0.9, 0, 1], np.float32)
    for reduction in REDUCTIONS:
        # y = 0: the loss is -log(1 - x), about x for small x: log1p's accuracy, not log's
        small = np.array([1e-7, 3e-5, 1e-3, 0.25, 0.4], np.float32)
        for x, y in ((probs, other), (other, probs), (small, np.zeros_like(small))):
            got = losses.binary_cross_entropy(x, y, reduction=reduction, backend=backend)
            want = ref.binary_cross_entropy(x, y, reduction=reduction)
            assert_close(got[0], want[0], np.float32)
            assert_close(got[1], want[1], np.float32)
        logp = np.log(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.01])).astype(
            np.float32)
        kl_y = np.array([0, sub, tiny, 1e-30, 1e-3, 0.5, 1, 3e38, np.inf, 2], np.float32)
        got = losses.kl_div(logp, kl_y, reduction=reduction, backend=backend)
        want = ref.kl_div(logp, kl_y, reduction=reduction)
        assert_close(got[0], want[0], np.float32)
        assert_close(got[1], want[1], np.float32)
        logits = np.array([0, -0.0, 1e-30, -1e-30, 16, -16, 90, -90, 1e30, -np.inf, np.inf,
                           np.nan], np.float32)
        y = np.resize(np.array([0, 1, 0.25], np.float32), logits.shape)
        got = losses.binary_cross_entropy_with_logits(logits, y, reduction=reduction,
                                                      backend=backend)
        want = ref.binary_cross_entropy_with_logits(logits, y, reduction=reduction)
        assert_close(got[0], want[0], np.float32)
        assert_close(got[1], want[1], np.float32)
    # negative targets make xlogy NaN, as in torch
    got = losses.kl_div(logp[:2], np.array([-1, 0.5], np.float32), reduction="none",
                        backend=backend)
    assert np.isnan(got[0][0]) and np.isfinite(got[0][1])


BCE_BAD = [("input", np.nan), ("input", 1.5), ("input", -0.25), ("input", np.inf),
           ("target", 1.5), ("target", -0.25), ("target", np.nan), ("target", -np.inf)]


@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("where,value", BCE_BAD, ids=[f"{w}={v}" for w, v in BCE_BAD])
def test_bce_outside_unit_interval_raises_as_torch(where, value, reduction, dtype, backend):
    """torch's binary_cross_entropy refuses an input or target outside [0, 1], NaN included;
    so does fastopt, naming the argument and the element, with and without weights."""
    torch = pytest.importorskip("torch")
    x, y = data("bce", (5, 4097), dtype, seed=3)
    bad = x if where == "input" else y
    bad[3, 2000] = value
    bad[4, 7] = value  # the first one is named
    with pytest.raises(RuntimeError, match=f"all elements of {where} should be between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(torch.tensor(x), torch.tensor(y))
    for weight in (None, np.full(4097, 0.5, dtype)):
        with pytest.raises(ValueError, match=rf"{where}: binary_cross_entropy needs .* in "
                                             rf"\[0, 1\], got {value} at index \[3, 2000\]"):
            losses.binary_cross_entropy(x, y, weight, reduction, backend=backend)
        with pytest.raises(ValueError, match=where):
            losses.binary_cross_entropy(x, y, weight, reduction, return_grad=False,
                                        backend=backend)


def test_bce_accepts_the_closed_interval():
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np.float32)
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    for reduction in REDUCTIONS:
        got = losses.binary_cross_entropy(x, y, reduction=reduction)
        want = ref.binary_cross_entropy(x, y, reduction=reduction)
        assert_close(got[0], want[0], np.float32)
        assert_close(got[1], want[1], np.float32)


@pytest.mark.parametrize("name", list(LOSSES))
def test_reference_backend_plumbing(name):
    # the `reference` backend runs fastopt.reference itself: one case per loss checks the
    # plumbing (views, reductions, gradient written), not the formula against itself
    fn, rfn, kw, kind = LOSSES[name]
    x, y = data(kind, (4, 5), np.float64)
    for reduction in REDUCTIONS:
        loss, grad = fn(x, y, reduction=reduction, backend="reference", **kw)
        rloss, rgrad = rfn(x, y, reduction=reduction, **kw)
        np.testing.assert_allclose(loss, rloss, rtol=1e-12)
        np.testing.assert_allclose(grad, rgrad, rtol=1e-12)
