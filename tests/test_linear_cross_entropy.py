"""fastopt.losses.linear_cross_entropy against the unfused composition, and its memory bound."""

import tracemalloc

import numpy as np
import pytest
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
    tracemalloc.start()
    losses.linear_cross_entropy(hidden, weight, target, bias, chunk_size=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_logits = n * v * 4
    assert peak <= outputs + 3 * chunk_bytes + 64 * n + (1 << 16), (peak, outputs, chunk_bytes)
    assert peak < outputs + full_logits / 8


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
