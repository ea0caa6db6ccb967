"""fastopt.losses.cross_entropy against fastopt.reference and torch.nn.functional."""

import numpy as np
import pytest
from conftest import backend_params
from loss_cases import ce_inputs
from peak_memory import peak_extra_bytes
from tolerances import assert_close

import fastopt
from fastopt import losses
from fastopt import reference as ref

BACKENDS = backend_params()
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (4096, 1), (3, 7), (4096, 7), (3, 32000), (1, 50257), (3, 50257)]
OPTIONS = {
    "plain": {},
    "weight": dict(weight=True),
    "ignore": dict(ignore=True),
    "smooth": dict(label_smoothing=0.1),
    "smooth_weight_ignore": dict(weight=True, ignore=True, label_smoothing=0.2),
    "z_loss": dict(z_loss=1e-4, ignore=True),
    "softcap": dict(softcap=5.0, label_smoothing=0.1),
    "probs": dict(probs=True),
    "probs_weight_smooth": dict(probs=True, weight=True, label_smoothing=0.1),
    "probs_softcap_z": dict(probs=True, softcap=3.0, z_loss=1e-3),
    "everything": dict(weight=True, ignore=True, label_smoothing=0.3, z_loss=1e-3, softcap=4.0),
}


def make(shape, dtype, opts, seed=0, index_dtype=np.int64):
    return ce_inputs(np.random.default_rng(seed), shape, dtype, opts, index_dtype)


def mean_denominator(t, w, reduction):
    """What 'mean' divides by: the rows (probabilities) or the weights of the counted rows."""
    if reduction != "mean":
        return 1.0
    t = np.asarray(t)
    if t.dtype.kind == "f":
        return float(t.size // t.shape[1] if t.ndim > 1 else 1)
    counted = t.reshape(-1)[t.reshape(-1) != -100].astype(np.int64)
    return float(np.sum(w[counted]) if w is not None else counted.size) or 1.0


def assert_grad_close(grad, expected, dtype, denom, what="grad"):
    """Compare gradients as the per-row values 'mean' divides by `denom`. Divided, every
    element of a [3, 50257] gradient is below 1e-5 and the table's atol (1e-6 for float32)
    would pass one that is zeroed or 10 % off; times denom they are of order 1 again, where
    rtol and atol bound them as intended (and the exact cancellation at C = 1 still fits)."""
    assert_close(np.asarray(grad, np.float64) * denom, np.asarray(expected, np.float64) * denom,
                 dtype, what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(backend, dtype, shape, option, reduction):
    x, t, w, kw = make(shape, dtype, OPTIONS[option])
    x0 = x.copy()
    loss, grad = losses.cross_entropy(x, t, w, reduction=reduction, backend=backend, **kw)
    rloss, rgrad = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
    assert grad.dtype == dtype and grad.shape == x.shape
    np.testing.assert_array_equal(x, x0)  # the input is read only
    assert_close(loss, rloss, dtype, "loss")
    assert_grad_close(grad, rgrad, dtype, mean_denominator(t, w, reduction))
    if reduction == "none":
        assert loss.dtype == dtype and loss.shape == (shape[0],)
    else:
        assert isinstance(loss, float)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", [o for o in OPTIONS if "z" not in o and "softcap" not in o
                                    and o != "everything"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(dtype, option, reduction):
    torch = pytest.importorskip("torch")
    x, t, w, kw = make((37, 11), dtype, OPTIONS[option], seed=1)
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)
    wt = None if w is None else torch.tensor(w)
    out = torch.nn.functional.cross_entropy(xt, tt, wt, reduction=reduction, **kw)
    out.sum().backward()
    loss, grad = losses.cross_entropy(x, t, w, reduction=reduction, **kw)
    assert_close(loss, out.detach().numpy(), dtype, "loss")
    assert_grad_close(grad, xt.grad.numpy(), dtype, mean_denominator(t, w, reduction))


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_index_dtypes_and_1d_logits(index_dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(13).astype(np.float32)
    t = np.array(4, dtype=index_dtype)
    for reduction in ("mean", "none"):
        loss, grad = losses.cross_entropy(x, t, reduction=reduction)
        xt = torch.tensor(x, requires_grad=True)
        out = torch.nn.functional.cross_entropy(xt, torch.tensor(int(t)), reduction=reduction)
        out.sum().backward()
        assert_close(loss, out.detach().numpy(), np.float32)
        assert_close(grad, xt.grad.numpy(), np.float32)
    x2, t2, _, _ = make((9, 5), np.float64, {}, index_dtype=index_dtype)
    assert_close(losses.cross_entropy(x2, t2)[1], ref.cross_entropy(x2, t2)[1])


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", ["smooth_weight_ignore", "probs_softcap_z", "everything"])
def test_inplace_and_forward_only(dtype, option, backend):
    x, t, w, kw = make((65, 4097), dtype, OPTIONS[option])
    rloss, rgrad = ref.cross_entropy(x, t, w, **kw)
    fwd = losses.cross_entropy(x, t, w, return_grad=False, backend=backend, **kw)
    assert_close(fwd, rloss, dtype)
    y = x.copy()
    loss, grad = losses.cross_entropy(y, t, w, inplace=True, backend=backend, **kw)
    assert grad is y
    assert_close(loss, rloss, dtype)
    assert_grad_close(y, rgrad, dtype, mean_denominator(t, w, "mean"))
    # grad_out receives the same gradient a new array would, and is returned
    buf = np.full_like(x, np.nan)
    loss2, grad2 = losses.cross_entropy(x, t, w, grad_out=buf, backend=backend, **kw)
    assert grad2 is buf and loss2 == losses.cross_entropy(x, t, w, backend=backend, **kw)[0]
    np.testing.assert_array_equal(buf, losses.cross_entropy(x, t, w, backend=backend, **kw)[1])
    # soft-capping with no gradient buffer works on a scratch row
    z = x.copy()
    assert_close(losses.cross_entropy(z, t, softcap=2.0, return_grad=False, backend=backend),
                 ref.cross_entropy(x, t, softcap=2.0)[0], dtype)
    np.testing.assert_array_equal(z, x)


def _thread_setters(backend):
    if backend == "numba":
        import numba

        return numba.get_num_threads, numba.set_num_threads, min(numba.config.NUMBA_NUM_THREADS,
                                                                 3)
    return fastopt.get_num_threads, fastopt.set_num_threads, 3


@pytest.mark.parametrize("backend", backend_params())
def test_deterministic_across_threads(backend):
    x, t, w, kw = make((513, 1000), np.float32, OPTIONS["smooth_weight_ignore"], seed=3)
    get, set_, most = _thread_setters(backend)
    before = get()
    try:
        results = []
        for n in range(1, most + 1):
            set_(n)
            loss, grad = losses.cross_entropy(x, t, w, reduction="sum", backend=backend, **kw)
            results.append((loss, grad))
    finally:
        set_(before)
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_logits_follow_reference(dtype, bad, backend):
    x, t, _, _ = make((6, 40), dtype, {}, seed=4)
    x[1, 3] = bad
    x[2, :] = -np.inf
    x[4, t[4]] = bad
    for smoothing in (0.0, 0.1):
        loss, grad = losses.cross_entropy(x, t, reduction="none", label_smoothing=smoothing,
                                          backend=backend)
        rloss, rgrad = ref.cross_entropy(x, t, reduction="none", label_smoothing=smoothing)
        assert_close(loss, rloss, dtype)
        assert_close(grad, rgrad, dtype)


@pytest.mark.parametrize("backend", backend_params())
def test_all_ignored_mean_is_nan_like_torch(backend):
    torch = pytest.importorskip("torch")
    x, _, _, _ = make((4, 5), np.float32, {})
    t = np.full(4, -100)
    loss, grad = losses.cross_entropy(x, t, backend=backend)
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    out.backward()
    assert np.isnan(loss) and np.isnan(out.item())
    np.testing.assert_array_equal(grad, xt.grad.numpy())
    np.testing.assert_array_equal(grad, 0)


def test_torch_tensors_in_torch_tensors_out():
    torch = pytest.importorskip("torch")
    x, t, w, kw = make((8, 6), np.float32, OPTIONS["weight"])
    loss, grad = losses.cross_entropy(torch.tensor(x), torch.tensor(t), torch.tensor(w),
                                      reduction="none")
    assert isinstance(grad, torch.Tensor) and isinstance(loss, torch.Tensor)
    rloss, rgrad = ref.cross_entropy(x, t, w, reduction="none")
    assert_close(loss.numpy(), rloss, np.float32)
    assert_close(grad.numpy(), rgrad, np.float32)


def test_bad_input_raises_naming_the_argument():
    x, t, w, _ = make((4, 5), np.float32, {"weight": True})
    cases = [
        (dict(target=np.array([0, 1, 5, 2])), ValueError, "target: class index 5"),
        (dict(target=np.array([0, 1, -3, 2])), ValueError, "target: class index -3"),
        (dict(target=np.zeros(3, dtype=np.int64)), ValueError, "target"),
        (dict(target=np.zeros(4, dtype=np.float32)), ValueError, "target: float targets"),
        (dict(target=np.zeros((4, 5), dtype=np.int64)), ValueError, "target: class indices"),
        (dict(target=np.zeros(4, dtype=np.bool_)), TypeError, "target"),
        (dict(target=np.zeros((4, 1), dtype=np.uint8)), ValueError, "target: class indices"),
        (dict(target=np.zeros((4, 5), dtype=np.float64)), TypeError, "target"),
        (dict(weight=np.ones(4, dtype=np.float32)), ValueError, "weight"),
        (dict(weight=np.ones(5, dtype=np.float64)), TypeError, "weight"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (dict(logits=x.astype(np.int64)), TypeError, "logits"),
        (dict(logits=x.astype(np.float16)), TypeError, "logits"),
        (dict(logits=np.asfortranarray(np.ones((4, 5), np.float32))), ValueError, "logits"),
        (dict(logits=np.float32(1.0)), TypeError, "logits: a NumPy scalar"),
        (dict(logits=np.ones((4, 0), np.float32)), ValueError, "logits: the class axis"),
        (dict(logits=np.ones((4, 5, 2), np.float32)), ValueError, "target: class indices"),
        (dict(softcap=-1.0), ValueError, "softcap"),
        (dict(z_loss=-1.0), ValueError, "z_loss"),
    ]
    for change, exc, match in cases:
        args = {**dict(logits=x, target=t, weight=None), **change}
        with pytest.raises(exc, match=match):
            losses.cross_entropy(**args)
    readonly = x.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="logits.*read-only"):
        losses.cross_entropy(readonly, t, inplace=True)
    strided = np.ones((4, 10), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="logits.*contiguous"):
        losses.cross_entropy(strided, t, inplace=True)
    probs = np.full((4, 5), 0.2, np.float32)
    with pytest.raises(ValueError, match="target: shares memory with logits"):
        losses.cross_entropy(probs, probs, inplace=True)
    for buf, exc, match in [
            (np.empty((4, 6), np.float32), ValueError, r"grad_out: shape \[4, 6\] does not "
                                                       r"match logits' \[4, 5\]"),
            (np.empty((4, 5), np.float64), TypeError, "grad_out: dtype float64 does not match"),
            (np.empty((5, 4), np.float32).T, ValueError, "grad_out.*contiguous"),
            (x, ValueError, "grad_out: shares memory with logits"),
            (readonly, ValueError, "grad_out: array is read-only")]:
        with pytest.raises(exc, match=match):
            losses.cross_entropy(x, t, grad_out=buf)
    with pytest.raises(ValueError, match="grad_out: shares memory with target"):
        losses.cross_entropy(x, probs, grad_out=probs)
    with pytest.raises(ValueError, match="grad_out: inplace=True"):
        losses.cross_entropy(x.copy(), t, inplace=True, grad_out=np.empty_like(x))
    with pytest.raises(ValueError, match="grad_out: given with return_grad=False"):
        losses.cross_entropy(x, t, return_grad=False, grad_out=np.empty_like(x))
    before = x.copy()
    with pytest.raises(ValueError, match="target"):
        losses.cross_entropy(x, np.array([0, 1, 9, 2]), inplace=True)
    np.testing.assert_array_equal(x, before)  # refused before anything was written


KDIM_SHAPES = [(2, 5, 3), (3, 4, 2, 3), (1, 7, 1), (2, 3, 0), (2, 1, 4097), (3, 7, 4097),
               (1, 50257, 7)]
KDIM_OPTIONS = ["plain", "smooth_weight_ignore", "probs_weight_smooth", "everything"]


def make_kdim(shape, dtype, opts, seed=0, index_dtype=np.int64):
    """[N, C, d1, ...] logits and targets, built as [N, d1, ..., C] rows moved into place."""
    n, c, rest = shape[0], shape[1], shape[2:]
    x2, t2, w, kw = make((n * int(np.prod(rest)), c), dtype, opts, seed, index_dtype)
    x = np.ascontiguousarray(np.moveaxis(x2.reshape(n, *rest, c), -1, 1))
    t = np.ascontiguousarray(np.moveaxis(t2.reshape(n, *rest, c), -1, 1)) if opts.get("probs") \
        else t2.reshape(n, *rest)
    return x, t, w, kw


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", KDIM_SHAPES, ids=str)
@pytest.mark.parametrize("option", KDIM_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kdim_matches_rows(backend, dtype, shape, option, reduction):
    """[N, C, d1, ...] is cross-entropy of its [N d1 ..., C] rows: the strided kernel against
    the row kernel's specification, in place too."""
    x, t, w, kw = make_kdim(shape, dtype, OPTIONS[option], seed=6)
    rows = np.moveaxis(x, 1, -1).reshape(-1, shape[1])
    trows = np.moveaxis(t, 1, -1).reshape(-1, shape[1]) if t.dtype.kind == "f" else t.reshape(-1)
    rloss, rgrad = ref.cross_entropy(rows, trows, w, reduction=reduction, **kw)
    rgrad = np.moveaxis(rgrad.reshape(shape[:1] + shape[2:] + shape[1:2]), -1, 1)
    denom = mean_denominator(trows, w, reduction)
    x0 = x.copy()
    loss, grad = losses.cross_entropy(x, t, w, reduction=reduction, backend=backend, **kw)
    np.testing.assert_array_equal(x, x0)
    assert grad.shape == x.shape and grad.flags.c_contiguous
    assert_close(loss, np.reshape(rloss, np.shape(loss)), dtype, "loss")
    assert_grad_close(grad, rgrad, dtype, denom)
    if reduction == "none":
        assert loss.shape == shape[:1] + shape[2:]
    y = x.copy()
    loss2, grad2 = losses.cross_entropy(y, t, w, reduction=reduction, inplace=True,
                                        backend=backend, **kw)
    assert grad2 is y
    assert_grad_close(y, rgrad, dtype, denom, "in place")
    assert_close(losses.cross_entropy(x, t, w, reduction=reduction, return_grad=False,
                                      backend=backend, **kw), loss, dtype, "forward only")


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("option", ["everything", "probs_softcap_z"])
def test_kdim_reference_backend(option, reduction):
    """The reference backend's plumbing of [N, C, d1, ...] (its views keep the shape)."""
    test_kdim_matches_rows("reference", np.float64, (3, 4, 2, 3), option, reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("option", ["plain", "weight", "ignore", "smooth_weight_ignore",
                                    "probs", "probs_weight_smooth"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kdim_matches_torch(dtype, option, reduction):
    torch = pytest.importorskip("torch")
    x, t, w, kw = make_kdim((3, 6, 4, 5), dtype, OPTIONS[option], seed=7)
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.cross_entropy(xt, torch.tensor(t), None if w is None else
                                            torch.tensor(w), reduction=reduction, **kw)
    out.sum().backward()
    loss, grad = losses.cross_entropy(x, t, w, reduction=reduction, **kw)
    assert_close(loss, out.detach().numpy(), dtype, "loss")
    denom = mean_denominator(np.moveaxis(t, 1, -1).reshape(-1, 6) if t.dtype.kind == "f"
                             else t, w, reduction)
    assert_grad_close(grad, xt.grad.numpy(), dtype, denom)


INT_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("index_dtype", INT_DTYPES)
@pytest.mark.parametrize("shape", [(37, 11), (3, 11, 5)], ids=str)
def test_any_integer_class_indices(index_dtype, shape):
    """Any integer dtype gives the int64 result bit for bit (uint8 is torch's Byte target)."""
    ignore = 9
    x, t, w, kw = make_kdim(shape, np.float32, OPTIONS["smooth_weight_ignore"], seed=8)
    t[t == -100] = ignore
    want = losses.cross_entropy(x, t, w, ignore_index=ignore, reduction="none", **kw)
    got = losses.cross_entropy(x, t.astype(index_dtype), w, ignore_index=ignore,
                               reduction="none", **kw)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    bad = t.astype(index_dtype)
    bad.reshape(-1)[4] = 200 if np.iinfo(index_dtype).max >= 200 else 100
    with pytest.raises(ValueError, match="target: class index (200|100) at row 4"):
        losses.cross_entropy(x, bad, w, ignore_index=ignore)


def test_uint8_targets_match_torch():
    torch = pytest.importorskip("torch")
    x, t, _, _ = make_kdim((2, 5, 3, 3), np.float64, {}, seed=9)
    t = t.astype(np.uint8)
    t[0, 1] = 255  # segmentation masks mark void pixels 255
    xt = torch.tensor(x, requires_grad=True)
    # torch takes uint8 targets for [N, C] logits only: compare with its int64 ones
    out = torch.nn.functional.cross_entropy(xt, torch.tensor(t).long(), ignore_index=255)
    out.backward()
    loss, grad = losses.cross_entropy(x, t, ignore_index=255)
    assert_close(loss, out.item())
    assert_close(grad, xt.grad.numpy())


# One call of in-place cross-entropy on 64 MB of logits. Native scratch the size of the logits
# (C++, OpenMP or torch allocations, which tracemalloc cannot see) would raise the resident
# set's peak by ~64 MB; what the call needs is a few bytes a row (one row per thread for the
# strided [N, C, d] layout).
_INPLACE_SETUP = """
import numpy as np
from fastopt import losses
rng = np.random.default_rng(5)
x = rng.standard_normal({shape}, dtype=np.float32)
t = rng.integers(0, {c}, {tshape})
losses.cross_entropy(x.copy()[:2], t[:2], inplace=True)  # warm-up: threads, imports
"""


@pytest.mark.parametrize("shape", [(2048, 8192), (16, 1024, 1024)], ids=str)
def test_inplace_allocates_no_logits_sized_buffer(shape):
    tshape = shape[:1] + shape[2:]
    extra = peak_extra_bytes(_INPLACE_SETUP.format(shape=shape, c=shape[1], tshape=tshape),
                             "losses.cross_entropy(x, t, inplace=True)")
    logits_bytes = int(np.prod(shape)) * 4
    assert extra < 0.05 * logits_bytes, (extra, logits_bytes)


class _CudaLike:
    """Host memory dressed as a CUDA array: enough for the checks made before any launch."""

    def __init__(self, a):
        self.a = a
        self.shape, self.dtype = a.shape, a.dtype
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str,
                                         "data": (a.ctypes.data, False), "version": 3,
                                         "strides": None, "stream": 1}


def test_cuda_arrays_refuse_what_only_the_host_path_takes():
    """The CUDA kernel reads [N, C] rows and int32/int64 indices; anything else is said before
    a launch."""
    x = _CudaLike(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"logits: \[N, C, d1, ...\] logits are taken from host"):
        losses.cross_entropy(x, _CudaLike(np.zeros((2, 4), np.int64)))
    with pytest.raises(TypeError, match="target: class indices of dtype uint8 .* int32 or int64"):
        losses.cross_entropy(_CudaLike(np.zeros((2, 3), np.float32)),
                             _CudaLike(np.zeros(2, np.uint8)))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_reference_backend_plumbing(option):
    # the `reference` backend runs fastopt.reference itself: one case per option checks the
    # plumbing (views, results, gradient written), not the formula against itself
    x, t, w, kw = make((5, 7), np.float64, OPTIONS[option])
    loss, grad = losses.cross_entropy(x, t, w, reduction="mean", backend="reference", **kw)
    rloss, rgrad = ref.cross_entropy(x, t, w, reduction="mean", **kw)
    np.testing.assert_array_equal(loss, rloss)
    np.testing.assert_array_equal(grad, rgrad)
