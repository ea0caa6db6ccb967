"""fastopt.losses.linear_cross_entropy against the unfused composition, and its memory bound."""

import tracemalloc

import numpy as np
import pytest
from peak_memory import peak_extra_bytes
from tolerances import assert_close

from fastopt import losses
from fastopt import reference as ref


def make(n, h, v, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, h)).astype(dtype)
    weight = (rng.standard_normal((v, h)) / np.sqrt(h)).astype(dtype)
    target = rng.integers(0, v, n)
    b = (rng.standard_normal(v) * 0.1).astype(dtype) if bias else None
    return hidden, weight, target, b


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
@pytest.mark.parametrize("options", [{}, dict(label_smoothing=0.1, ignore=True),
                                     dict(class_weight=True, reduction="sum", z_loss=1e-3)],
                         ids=["plain", "smooth_ignore", "weighted_sum_z"])
def test_matches_unfused(dtype, chunk_size, options):
    hidden, weight, target, bias = make(50, 16, 37, dtype)
    kw = dict(options)
    if kw.pop("ignore", False):
        target[::4] = -100
    if kw.pop("class_weight", False):
        kw["class_weight"] = np.linspace(0.5, 1.5, 37).astype(dtype)
    got = losses.linear_cross_entropy(hidden, weight, target, bias, chunk_size=chunk_size, **kw)
    want = ref.linear_cross_entropy(hidden, weight, target, bias, **kw)
    # float32 runs its matrix products in float32 (BLAS): compare the composition in float32
    rtol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for g, w, what in zip(got, want, ("loss", "grad_hidden", "grad_weight", "grad_bias"),
                          strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                                   err_msg=what, **rtol)
    assert got[1].dtype == dtype and got[2].dtype == dtype and got[3].dtype == dtype


def test_matches_fused_cross_entropy_composition_float32():
    # the same arithmetic unchunked in float32: logits by BLAS, then the fused kernel
    hidden, weight, target, bias = make(33, 8, 1000, np.float32, seed=1)
    logits = hidden @ weight.T + bias
    loss, dlogits = losses.cross_entropy(logits, target)
    got = losses.linear_cross_entropy(hidden, weight, target, bias, chunk_size=5)
    assert_close(got[0], loss, np.float32)
    assert_close(got[1], dlogits @ weight, np.float32)
    assert_close(got[2], dlogits.T @ hidden, np.float32)
    assert_close(got[3], dlogits.sum(0), np.float32)


def test_no_bias_and_torch_tensors():
    torch = pytest.importorskip("torch")
    hidden, weight, target, _ = make(20, 6, 11, np.float64, bias=False)
    ht = torch.tensor(hidden, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    out = torch.nn.functional.cross_entropy(ht @ wt.T, torch.tensor(target))
    out.backward()
    loss, gh, gw, gb = losses.linear_cross_entropy(torch.tensor(hidden), torch.tensor(weight),
                                                   torch.tensor(target), chunk_size=3)
    assert gb is None and isinstance(gh, torch.Tensor)
    assert_close(loss, out.item())
    assert_close(gh.numpy(), ht.grad.numpy())
    assert_close(gw.numpy(), wt.grad.numpy())


def test_peak_memory_bounded_by_chunk():
    n, h, v, chunk = 512, 32, 4000, 16
    hidden, weight, target, bias = make(n, h, v, np.float32, seed=2)
    outputs = hidden.nbytes + weight.nbytes + bias.nbytes  # the three gradients
    chunk_bytes = chunk * v * 4
    losses.linear_cross_entropy(hidden[:2], weight, target[:2], bias)  # imports SciPy's BLAS
    tracemalloc.start()
    losses.linear_cross_entropy(hidden, weight, target, bias, chunk_size=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_logits = n * v * 4
    # one chunk buffer, the float64 bias sum, per-row losses: a [V, H] temporary per chunk (the
    # size of grad_weight) would not fit
    assert peak <= outputs + chunk_bytes + 16 * v + 16 * n + (1 << 16), (peak, outputs,
                                                                          chunk_bytes)
    assert peak < outputs + full_logits / 8


def test_default_chunk_rows():
    # >= 1024 rows where 128 MiB of logits allow it, N / 8 for large N, even chunks
    assert losses._chunk_rows(4096, 32000, 4) == 1024
    assert losses._chunk_rows(100, 32000, 4) == 100
    assert losses._chunk_rows(65537, 1000, 4) == 8193  # 8 even chunks
    assert losses._chunk_rows(3000, 32000, 4) == 1000
    assert losses._chunk_rows(4096, 262144, 4) == 128  # a large vocabulary: the budget rules
    assert losses._chunk_rows(1, 7, 8) == 1


@pytest.mark.parametrize("bias", [False, True])
def test_without_scipy_matches(monkeypatch, bias):
    """Without SciPy the products run through np.matmul into preallocated buffers."""
    hidden, weight, target, b = make(65, 9, 31, np.float64, seed=6, bias=bias)
    with_scipy = losses.linear_cross_entropy(hidden, weight, target, b, chunk_size=16)
    monkeypatch.setitem(__import__("sys").modules, "scipy.linalg", None)
    assert losses._NumpyGemm(np.dtype(np.float64))._gemm is None
    without = losses.linear_cross_entropy(hidden, weight, target, b, chunk_size=16)
    for a, w in zip(with_scipy, without, strict=True):
        if a is not None:
            np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-14)


def test_torch_tensors_use_torch_gemms():
    torch = pytest.importorskip("torch")
    hidden, weight, target, b = make(70, 12, 45, np.float64, seed=7)
    got = losses.linear_cross_entropy(*(torch.tensor(x) for x in (hidden, weight, target, b)),
                                      chunk_size=8, label_smoothing=0.1)
    want = ref.linear_cross_entropy(hidden, weight, target, b, label_smoothing=0.1)
    assert all(isinstance(g, torch.Tensor) for g in got[1:])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-12, atol=1e-13)


# An LM head's inputs for peak_extra_bytes' setup: hidden [n, h] (a leaf), weight [v, h],
# target [n]; a setup appends its warm-up.
_LM_HEAD = """
import torch
import fastopt.torch as fo
torch.manual_seed(0)
n, h, v = {n}, {h}, {v}
hidden = torch.randn(n, h, requires_grad=True)
weight = (torch.randn(v, h) / h ** 0.5).requires_grad_()
target = torch.randint(0, v, (n,))
"""

_UNFUSED_SETUP = _LM_HEAD + """
def unfused():
    torch.nn.functional.cross_entropy(hidden @ weight.T, target).backward()
def fused():
    fo.linear_cross_entropy(hidden, weight, target).backward()
{which}()  # warm-up
hidden.grad = weight.grad = None
"""


def test_peak_memory_a_fifth_of_unfused():
    """The default chunking against torch's unfused cross_entropy(h @ W.T, t) + backward:
    resident peak <= 1/5, gradients included."""
    pytest.importorskip("torch")
    peaks = {which: peak_extra_bytes(_UNFUSED_SETUP.format(n=4096, h=64, v=16000, which=which),
                                     f"{which}()")
             for which in ("fused", "unfused")}
    assert peaks["fused"] * 5 <= peaks["unfused"], peaks


def test_bad_input():
    hidden, weight, target, bias = make(4, 3, 5, np.float32)
    with pytest.raises(ValueError, match="weight: expected shape"):
        losses.linear_cross_entropy(hidden, weight[:, :2].copy(), target)
    with pytest.raises(TypeError, match="weight: dtype"):
        losses.linear_cross_entropy(hidden, weight.astype(np.float64), target)
    with pytest.raises(ValueError, match="target: class index 5"):
        losses.linear_cross_entropy(hidden, weight, np.array([0, 5, 1, 2]))
    with pytest.raises(TypeError, match="target"):
        losses.linear_cross_entropy(hidden, weight, target.astype(np.float32))
    with pytest.raises(ValueError, match="bias"):
        losses.linear_cross_entropy(hidden, weight, target, bias[:3].copy())
    with pytest.raises(ValueError, match="chunk_size"):
        losses.linear_cross_entropy(hidden, weight, target, chunk_size=0)
    with pytest.raises(ValueError, match="reduction"):
        losses.linear_cross_entropy(hidden, weight, target, reduction="none")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_every_target_ignored(dtype, bias):
    """An all-padding micro-batch: zero gradients as torch's cross_entropy gives (NaN ones
    would turn every weight NaN at the next step); loss NaN for 'mean', 0 for 'sum'."""
    torch = pytest.importorskip("torch")
    hidden, weight, _, b = make(9, 5, 13, dtype, seed=3, bias=bias)
    target = np.full(9, -100)
    for reduction in ("mean", "sum"):
        ht = torch.tensor(hidden, requires_grad=True)
        wt = torch.tensor(weight, requires_grad=True)
        logits = ht @ wt.T + (0 if b is None else torch.tensor(b))
        out = torch.nn.functional.cross_entropy(logits, torch.tensor(target),
                                                reduction=reduction)
        out.backward()
        for chunk_size in (1, 4, None):
            loss, gh, gw, gb = losses.linear_cross_entropy(hidden, weight, target, b,
                                                           reduction=reduction,
                                                           chunk_size=chunk_size)
            np.testing.assert_equal(loss, out.item())  # NaN == NaN here
            np.testing.assert_array_equal(gh, ht.grad.numpy())
            np.testing.assert_array_equal(gw, wt.grad.numpy())
            np.testing.assert_array_equal(gh, 0)
            np.testing.assert_array_equal(gw, 0)
            if bias:
                np.testing.assert_array_equal(gb, 0)
        assert np.isnan(out.item()) == (reduction == "mean")


def test_zero_class_weight_rows_are_nan_like_torch():
    torch = pytest.importorskip("torch")
    hidden, weight, _, _ = make(6, 4, 5, np.float64, seed=4, bias=False)
    target = np.array([1, -100, 1, 1, -100, 1])
    cw = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    ht = torch.tensor(hidden, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    out = torch.nn.functional.cross_entropy(ht @ wt.T, torch.tensor(target), torch.tensor(cw))
    out.backward()
    loss, gh, gw, _ = losses.linear_cross_entropy(hidden, weight, target, class_weight=cw)
    np.testing.assert_equal(loss, out.item())
    np.testing.assert_array_equal(np.isnan(gh), np.isnan(ht.grad.numpy()))
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(wt.grad.numpy()))


def test_forward_only_and_integer_targets():
    hidden, weight, target, bias = make(40, 8, 300, np.float32, seed=5)
    target[::5] = 7
    full = losses.linear_cross_entropy(hidden, weight, target, bias, ignore_index=7,
                                       label_smoothing=0.1)
    for t in (target, target.astype(np.int16), target.astype(np.uint16)):
        assert losses.linear_cross_entropy(hidden, weight, t, bias, ignore_index=7,
                                           label_smoothing=0.1, chunk_size=6,
                                           return_grad=False) == pytest.approx(full[0], rel=1e-6)
    got = losses.linear_cross_entropy(hidden, weight, target.astype(np.uint16), bias,
                                      ignore_index=7, label_smoothing=0.1)
    for a, b in zip(got[1:], full[1:], strict=True):
        np.testing.assert_array_equal(a, b)


# --- fastopt.torch.linear_cross_entropy -------------------------------------------------

TORCH_CASES = [dict(), dict(bias=True, reduction="sum"), dict(ignore=True, label_smoothing=0.1),
               dict(bias=True, class_weight=True, ignore=True),
               dict(bias=True, class_weight=True, label_smoothing=0.2, reduction="sum")]


def _torch_case(torch, kw, dtype, n=(4, 9), h=16, v=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*n, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype) / h ** 0.5
    target = torch.randint(0, v, n, generator=g)
    kw = dict(kw)
    bias = torch.randn(v, generator=g, dtype=dtype) * 0.1 if kw.pop("bias", False) else None
    if kw.pop("ignore", False):
        target.view(-1)[::3] = -100
    if kw.pop("class_weight", False):
        kw["class_weight"] = torch.rand(v, generator=g, dtype=dtype) + 0.5
    return hidden, weight, target, bias, kw


def _torch_reference(torch, hidden, weight, target, bias, class_weight=None, **kw):
    logits = hidden @ weight.T + (0 if bias is None else bias)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, weight.shape[0]),
                                             target.reshape(-1), class_weight, **kw)


def _grads_of(torch, fn, tensors, scale=1.0):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    (loss * scale).backward()
    return loss.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
@pytest.mark.parametrize("kw", TORCH_CASES, ids=[str(i) for i in range(len(TORCH_CASES))])
def test_torch_linear_cross_entropy_matches_torch(kw, chunk_size, dtype):
    """fastopt.torch.linear_cross_entropy(h, W, t, b) against
    torch's F.cross_entropy(h @ W.T + b, t): the loss and the gradients autograd gives h, W
    and b, with [B, T, H] hidden and a scaled backward."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    dt = getattr(torch, dtype)
    hidden, weight, target, bias, kw = _torch_case(torch, kw, dt)
    tensors = [hidden, weight] + ([bias] if bias is not None else [])

    def ours(h, w, b=None):
        return fo.linear_cross_entropy(h, w, target, b, chunk_size=chunk_size, **kw)

    def theirs(h, w, b=None):
        return _torch_reference(torch, h, w, target, b, **kw)

    la, ga = _grads_of(torch, ours, tensors, 3.5)
    lb, gb = _grads_of(torch, theirs, tensors, 3.5)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    for a, b, what in zip([la, *ga], [lb, *gb],
                           ["loss", "hidden", "weight", "bias"][:1 + len(ga)], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        np.testing.assert_allclose(a.numpy(), b.numpy(), err_msg=what, **tol)
    with torch.no_grad():
        np.testing.assert_allclose(ours(*tensors).numpy(), lb.numpy(), **tol)


def test_torch_linear_cross_entropy_every_target_ignored():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    hidden, weight, target, bias, _ = _torch_case(torch, dict(bias=True), torch.float32)
    target[:] = -100
    for path in ("fused", "torch ops"):
        w = weight if path == "fused" else weight.T.contiguous().T  # strided: torch ops path
        for reduction in ("mean", "sum"):
            loss, grads = _grads_of(torch, lambda h, w_, b, r=reduction: fo.linear_cross_entropy(
                h, w_, target, b, reduction=r, chunk_size=5), [hidden, w, bias])
            assert loss.isnan().item() == (reduction == "mean"), path
            for g in grads:
                assert torch.equal(g, torch.zeros_like(g)), path


@pytest.mark.parametrize("kw", TORCH_CASES[1:], ids=[str(i) for i in range(1, len(TORCH_CASES))])
def test_torch_linear_cross_entropy_torch_ops_path(kw):
    """Tensors the NumPy kernels do not take (here a strided weight; CUDA and half precision
    alike) run the same chunked algorithm in torch ops."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    hidden, weight, target, bias, kw = _torch_case(torch, kw, torch.float64, seed=1)
    strided = weight.T.contiguous().T
    assert not strided.is_contiguous()
    tensors = [hidden, strided] + ([bias] if bias is not None else [])
    la, ga = _grads_of(torch, lambda h, w, b=None: fo.linear_cross_entropy(
        h, w, target, b, chunk_size=4, **kw), tensors)
    lb, gb = _grads_of(torch, lambda h, w, b=None: _torch_reference(
        torch, h, w, target, b, **kw), tensors)
    for a, b in zip([la, *ga], [lb, *gb], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


def test_torch_linear_cross_entropy_z_loss_softcap_and_double_backward():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    hidden, weight, target, bias, _ = _torch_case(torch, dict(bias=True, ignore=True),
                                                  torch.float64, seed=2)
    kw = dict(z_loss=1e-2, softcap=2.0, label_smoothing=0.1)

    def theirs(h, w, b):
        s = 2.0 * torch.tanh((h @ w.T + b) / 2.0).reshape(-1, w.shape[0])
        t = target.reshape(-1)
        rows = torch.nn.functional.cross_entropy(s, t, reduction="none", label_smoothing=0.1)
        counted = t != -100
        return (rows + 1e-2 * torch.logsumexp(s, 1) ** 2 * counted).sum() / counted.sum()

    def ours(h, w, b):
        return fo.linear_cross_entropy(h, w, target, b, chunk_size=5, **kw)

    tensors = [hidden, weight, bias]
    la, ga = _grads_of(torch, ours, tensors)
    lb, gb = _grads_of(torch, theirs, tensors)
    for a, b in zip([la, *ga], [lb, *gb], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    # a gradient penalty on the head's weight: torch's second derivative
    second = []
    for fn in (ours, theirs):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        loss = fn(*leaves)
        gh, gw = torch.autograd.grad(loss, leaves[:2], create_graph=True)
        total = loss + gh.square().sum() + gw.square().sum()
        second.append(torch.autograd.grad(total, leaves))
    for a, b in zip(*second, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_linear_cross_entropy_bad_input():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    h, w = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="weight: expected shape"):
        fo.linear_cross_entropy(h, torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target: expected shape"):
        fo.linear_cross_entropy(h, w, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        fo.linear_cross_entropy(h, w, torch.zeros(4, dtype=torch.long), reduction="none")


# The LM head's loss, forward and backward, on N x V = 2048 x 8192 (64 MB of float32 logits)
# in chunks of 64 rows: every native and torch allocation counts toward the peak.
_LM_HEAD_SETUP = _LM_HEAD + """
if {strided}:
    weight = weight.detach().T.contiguous().T.requires_grad_()  # the torch-ops path
fo.linear_cross_entropy(hidden[:4], weight, target[:4], chunk_size=64).backward()  # warm-up
hidden.grad = weight.grad = None
"""


@pytest.mark.parametrize("strided,chunks", [(False, 3), (True, 10)], ids=["fused", "torch_ops"])
def test_torch_linear_cross_entropy_never_holds_the_logits(strided, chunks):
    """Peak memory: the gradients and a few [64, V] blocks (the torch-ops path's autograd
    holds several per chunk), far from the 32 blocks of the [N, V] logits."""
    pytest.importorskip("torch")
    extra = peak_extra_bytes(_LM_HEAD_SETUP.format(n=2048, h=32, v=8192, strided=strided),
                             "fo.linear_cross_entropy(hidden, weight, target, "
                             "chunk_size=64).backward()")
    block = 64 * 8192 * 4
    gradients = (2048 + 8192) * 32 * 4 * 2  # the gradients, and what autograd copies of them
    assert extra < gradients + chunks * block, (extra, block)
