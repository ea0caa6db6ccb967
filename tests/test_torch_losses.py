"""fastopt.torch losses against torch.nn.functional: values and gradients through backward(),
every reduction, weights, ignore_index, label smoothing, probability targets, non-leaf and
leaf inputs, no_grad, in-place cross-entropy, the nn.Module forms and the torch fallbacks."""

import inspect
import types
import warnings

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as TF  # noqa: E402
from peak_memory import peak_extra_bytes  # noqa: E402
from tolerances import assert_close  # noqa: E402

import fastopt.torch as fo  # noqa: E402
from fastopt.torch import functional as fof  # noqa: E402

fused = pytest.mark.skipif(not fo.fused_losses_available(),
                           reason="fastopt.losses (the fused loss kernels) is not in this build")

LOSSES = ["cross_entropy", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
          "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail if a call falls back to torch.nn.functional: the fused kernel must run."""
    def refuse(*_, **__):
        raise AssertionError("fell back to torch.nn.functional")
    monkeypatch.setattr(fof, "TF", types.SimpleNamespace(**{n: refuse for n in LOSSES}))


def _name(dtype):
    return str(dtype).removeprefix("torch.")


def _check(ours, theirs, dtype, what):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, what
    assert_close(ours.detach().numpy(force=True), theirs.detach().numpy(force=True),
                 _name(dtype), what)


def _compare(fn_ours, fn_theirs, x, *, grad_out=None, dtype=torch.float32):
    """Loss value and input gradient of both, x a leaf (cloned for each side)."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    la, lb = fn_ours(xa), fn_theirs(xb)
    _check(la, lb, dtype, "loss")
    g = torch.ones_like(lb) if grad_out is None else grad_out
    la.backward(g)
    lb.backward(g)
    _check(xa.grad, xb.grad, dtype, "grad")


CE_CASES = [
    dict(), dict(reduction="sum"), dict(reduction="none"), dict(ignore_index=2),
    dict(label_smoothing=0.1), dict(weight=True), dict(weight=True, ignore_index=1),
    dict(weight=True, label_smoothing=0.2, reduction="sum"), dict(weight=True, reduction="none"),
]


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 7), (1, 1), (3, 4097), (7,)])
@pytest.mark.parametrize("kw", CE_CASES, ids=[str(i) for i in range(len(CE_CASES))])
def test_cross_entropy_index_targets(kw, shape, dtype, no_fallback):
    g = torch.Generator().manual_seed(0)
    c = shape[-1]
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    y = torch.randint(0, c, shape[:-1], generator=g)
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(c, generator=g, dtype=dtype) + 0.5
    grad_out = None
    if kw.get("reduction") == "none":
        grad_out = torch.randn(shape[:-1], generator=g, dtype=dtype)
    _compare(lambda a: fo.cross_entropy(a, y, **kw), lambda b: TF.cross_entropy(b, y, **kw), x,
             grad_out=grad_out, dtype=dtype)


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [dict(), dict(reduction="sum", label_smoothing=0.1),
                                dict(reduction="none", weight=True)])
def test_cross_entropy_probability_targets(kw, dtype, no_fallback):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 9, generator=g, dtype=dtype)
    y = torch.softmax(torch.randn(5, 9, generator=g, dtype=dtype), -1)
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(9, generator=g, dtype=dtype)
    grad_out = torch.randn(5, generator=g, dtype=dtype) if kw.get("reduction") == "none" else None
    _compare(lambda a: fo.cross_entropy(a, y, **kw), lambda b: TF.cross_entropy(b, y, **kw), x,
             grad_out=grad_out, dtype=dtype)


def _linear_head(n, v, seed):
    """Leaves h [n, 5] and w [v, 5] whose logits h @ w.T are a non-leaf, and targets [n]."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 5, generator=g, requires_grad=True)
    w = torch.randn(v, 5, generator=g, requires_grad=True)
    return h, w, torch.randint(0, v, (n,), generator=g)


def _loss_and_grads(loss, h, w, grad_out=1.0):
    """loss.backward(grad_out) from fresh .grad; the loss and the gradients of h and w."""
    h.grad = w.grad = None
    loss.backward(loss.new_tensor(grad_out))
    return loss.detach(), h.grad.clone(), w.grad.clone()


@fused
def test_cross_entropy_non_leaf_and_scaled_backward(no_fallback):
    h, w, y = _linear_head(6, 11, seed=2)
    ours, theirs = (_loss_and_grads(fn(h @ w.t(), y, label_smoothing=0.05), h, w, grad_out=3.5)
                    for fn in (fo.cross_entropy, TF.cross_entropy))
    for a, b in zip(ours, theirs, strict=True):
        _check(a, b, torch.float32, "non-leaf")


@fused
def test_backward_twice_with_retain_graph(no_fallback):
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([0, 5, 2, 1])
    loss = fo.cross_entropy(x * 2, y)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    _check(x.grad, 2 * first, torch.float32, "accumulated")


@fused
def test_cross_entropy_inplace(no_fallback):
    h, w, y = _linear_head(8, 13, seed=3)
    want = _loss_and_grads(TF.cross_entropy(h @ w.t(), y), h, w)
    out = (h @ w.t()).reshape(2, 4, 13)  # matmul saves h and w, not its output: in place is
    logits = out.view(8, 13)  # safe, also through a view of it
    ptr = logits.data_ptr()
    got = _loss_and_grads(fo.cross_entropy(logits, y, inplace=True), h, w)
    for a, b in zip(got, want, strict=True):
        _check(a, b, torch.float32, "inplace")
    assert logits.data_ptr() == ptr  # the gradient went into the logits' memory


@fused
def test_cross_entropy_inplace_refused_or_detected():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match="leaf"):
        fo.cross_entropy(x, y, inplace=True)
    with pytest.raises(ValueError, match="view of one"):
        fo.cross_entropy(x.view(3, 4), y, inplace=True)  # would overwrite the parameter
    with pytest.raises(ValueError, match="does not require grad"):
        fo.cross_entropy(torch.randn(3, 4), y, inplace=True)
    # tanh saves its output for backward: autograd notices the overwrite instead of using it
    logits = torch.tanh(x * 1.0)
    loss = fo.cross_entropy(logits, y, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@fused
def test_cross_entropy_z_loss_and_softcap(no_fallback):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, 10, (6,), generator=g)

    def theirs(b):
        s = 3.0 * torch.tanh(b / 3.0)
        rows = TF.cross_entropy(s, y, reduction="none") + 1e-2 * torch.logsumexp(s, -1) ** 2
        return rows.mean()

    _compare(lambda a: fo.cross_entropy(a, y, z_loss=1e-2, softcap=3.0), theirs, x,
             dtype=torch.float64)


ELEMENTWISE = [
    ("mse_loss", {}), ("l1_loss", {}), ("huber_loss", dict(delta=0.7)),
    ("smooth_l1_loss", dict(beta=0.5)), ("smooth_l1_loss", dict(beta=0.0)),
    ("binary_cross_entropy", {}), ("binary_cross_entropy", dict(weight=True)),
    ("binary_cross_entropy_with_logits", {}),
    ("binary_cross_entropy_with_logits", dict(weight=True, pos_weight=True)),
    ("kl_div", {}), ("kl_div", dict(log_target=True)), ("kl_div", dict(reduction="batchmean")),
]


def _elementwise_inputs(name, shape, dtype, g):
    x = torch.randn(shape, generator=g, dtype=dtype)
    y = torch.randn(shape, generator=g, dtype=dtype)
    if name == "binary_cross_entropy":
        x = torch.rand(shape, generator=g, dtype=dtype) * 0.98 + 0.01
        y = torch.rand(shape, generator=g, dtype=dtype)
    elif name == "binary_cross_entropy_with_logits":
        y = torch.rand(shape, generator=g, dtype=dtype)
    elif name == "kl_div":
        x = torch.log_softmax(x, -1)
        y = torch.softmax(y, -1)
    return x, y


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,kw", ELEMENTWISE, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(ELEMENTWISE)])
def test_elementwise_losses(name, kw, reduction, dtype, no_fallback):
    g = torch.Generator().manual_seed(5)
    shape = (3, 7)
    x, y = _elementwise_inputs(name, shape, dtype, g)
    kw = dict(kw)
    kw.setdefault("reduction", reduction)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(7, generator=g, dtype=dtype)
    if kw.pop("pos_weight", False):
        kw["pos_weight"] = torch.rand(7, generator=g, dtype=dtype) + 0.5
    grad_out = torch.randn(shape, generator=g, dtype=dtype) if kw["reduction"] == "none" \
        else None
    with warnings.catch_warnings():
        # torch warns that kl_div 'mean' is not the KL divergence; the values still compare
        warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
        _compare(lambda a: getattr(fo, name)(a, y, **kw),
                 lambda b: getattr(TF, name)(b, y, **kw), x, grad_out=grad_out, dtype=dtype)


@fused
@pytest.mark.parametrize("n", [1, 4097, 65537])
def test_odd_sizes(n, no_fallback):
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(n, generator=g), torch.randn(n, generator=g)
    _compare(lambda a: fo.mse_loss(a, y), lambda b: TF.mse_loss(b, y), x)
    _compare(lambda a: fo.huber_loss(a, y, reduction="sum"),
             lambda b: TF.huber_loss(b, y, reduction="sum"), x)


@fused
def test_no_grad_and_inputs_without_grad(no_fallback):
    x = torch.randn(4, 5)
    y = torch.tensor([1, 0, 4, 2])
    want = TF.cross_entropy(x, y)
    got = fo.cross_entropy(x, y)
    assert got.grad_fn is None and not got.requires_grad
    _check(got, want, torch.float32, "no grad")
    xr = x.clone().requires_grad_()
    with torch.no_grad():
        got = fo.cross_entropy(xr, y)
    assert got.grad_fn is None
    _check(got, want, torch.float32, "no_grad()")


def test_fallbacks_match_torch():
    """Inputs the kernels do not take are computed by torch, gradients included."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, generator=g)
    y = torch.randn(3, 4, generator=g, requires_grad=True)  # target needs grad
    for fn in ("mse_loss", "l1_loss", "smooth_l1_loss"):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = y.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
        getattr(fo, fn)(xa, ya).backward()
        getattr(TF, fn)(xb, yb).backward()
        _check(xa.grad, xb.grad, torch.float32, fn)
        _check(ya.grad, yb.grad, torch.float32, fn)
    # K-dimensional logits in neither C nor class-last order, half precision, non-contiguous
    # logits, mse with weight
    xk = torch.randn(2, 3, 5, 4, generator=g).transpose(1, 2)
    yk = torch.randint(0, 5, (2, 3, 4), generator=g)
    _compare(lambda a: fo.cross_entropy(a, yk), lambda b: TF.cross_entropy(b, yk), xk)
    yk = yk[:, :, 0]
    xh = torch.randn(3, 5, generator=g).to(torch.bfloat16)
    assert torch.equal(fo.cross_entropy(xh, yk[0]), TF.cross_entropy(xh, yk[0]))
    xt = torch.randn(5, 3, generator=g).t()
    assert torch.equal(fo.cross_entropy(xt, yk[0]), TF.cross_entropy(xt, yk[0]))
    w = torch.rand(3, 4, generator=g)
    assert torch.equal(fo.mse_loss(x, y.detach(), weight=w), TF.mse_loss(x, y.detach(), weight=w))
    # legacy size_average / reduce arguments
    with pytest.warns(UserWarning):
        got = fo.l1_loss(x, y.detach(), size_average=False)
    _check(got, TF.l1_loss(x, y.detach(), reduction="sum"), torch.float32, "legacy")


def test_invalid_input_raises_torch_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError):
        fo.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="bogus")
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        fo.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError):
        fo.binary_cross_entropy(torch.full((3,), 1.5), torch.zeros(3))


def test_signatures_match_torch():
    for name in LOSSES:
        ours = inspect.signature(getattr(fo, name)).parameters
        theirs = inspect.signature(getattr(TF, name)).parameters
        assert list(ours)[:len(theirs)] == list(theirs), name
        for k, prm in theirs.items():
            assert ours[k].default == prm.default, (name, k)
        for k in list(ours)[len(theirs):]:
            assert ours[k].kind == inspect.Parameter.KEYWORD_ONLY, (name, k)


MODULES = [("CrossEntropyLoss", dict(weight=torch.rand(6) + 0.1, label_smoothing=0.1)),
           ("CrossEntropyLoss", dict(reduction="sum", ignore_index=3)),
           ("MSELoss", {}), ("L1Loss", dict(reduction="sum")), ("HuberLoss", dict(delta=0.5)),
           ("SmoothL1Loss", dict(beta=0.3)), ("BCELoss", dict(weight=torch.rand(6))),
           ("BCEWithLogitsLoss", dict(pos_weight=torch.rand(6) + 0.5)),
           ("KLDivLoss", dict(reduction="batchmean", log_target=True))]


@pytest.mark.parametrize("name,kw", MODULES, ids=[f"{n}-{i}" for i, (n, _) in
                                                  enumerate(MODULES)])
def test_nn_modules(name, kw):
    ours, theirs = getattr(fo.nn, name)(**kw), getattr(torch.nn, name)(**kw)
    assert isinstance(ours, type(theirs))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours) == repr(theirs)
    g = torch.Generator().manual_seed(8)
    if name == "CrossEntropyLoss":
        x, y = torch.randn(5, 6, generator=g), torch.randint(0, 6, (5,), generator=g)
    else:
        lossname = {"MSELoss": "mse_loss", "L1Loss": "l1_loss", "HuberLoss": "huber_loss",
                    "SmoothL1Loss": "smooth_l1_loss", "BCELoss": "binary_cross_entropy",
                    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
                    "KLDivLoss": "kl_div"}[name]
        x, y = _elementwise_inputs(lossname, (5, 6), torch.float32, g)
    _compare(lambda a: ours(a, y), lambda b: theirs(b, y), x)


def _fused(loss):
    return type(loss.grad_fn).__name__ == "_FusedLossBackward"


KDIM_CASES = [dict(), dict(reduction="sum", label_smoothing=0.1),
              dict(reduction="none", weight=True, ignore_index=2),
              dict(weight=True, ignore_index=0, label_smoothing=0.2), dict(probs=True),
              dict(probs=True, weight=True, reduction="none", label_smoothing=0.1)]


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kw", KDIM_CASES, ids=[str(i) for i in range(len(KDIM_CASES))])
def test_cross_entropy_kdim(kw, layout, dtype, no_fallback):
    """[N, C, d1, d2] logits (segmentation) through the fused kernel in their own layout."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 6, 5, 7, generator=g, dtype=dtype) * 3
    kw = dict(kw)
    if kw.pop("probs", False):
        y = torch.softmax(torch.randn(3, 6, 5, 7, generator=g, dtype=dtype), 1)
    else:
        y = torch.randint(0, 6, (3, 5, 7), generator=g)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
        y = y.to(memory_format=torch.channels_last) if y.dim() == 4 else y
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(6, generator=g, dtype=dtype) + 0.5
    grad_out = torch.randn(3, 5, 7, generator=g, dtype=dtype) \
        if kw.get("reduction") == "none" else None
    assert _fused(fo.cross_entropy(x.clone().requires_grad_(), y, **kw))
    _compare(lambda a: fo.cross_entropy(a, y, **kw), lambda b: TF.cross_entropy(b, y, **kw), x,
             grad_out=grad_out, dtype=dtype)


@fused
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int32, torch.int64])
def test_cross_entropy_kdim_inplace_through_conv(target_dtype, layout, no_fallback):
    """In place over a conv's [N, C, H, W] output: the gradient lands in the output's own
    memory and layout, autograd sees the write (version bump), and the conv's weight gets
    torch's gradient."""
    g = torch.Generator().manual_seed(10)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    img = torch.randn(2, 3, 9, 11, generator=g).to(memory_format=fmt)
    w = torch.randn(7, 3, 3, 3, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (2, 7, 9), generator=g)
    TF.cross_entropy(torch.conv2d(img, w), y, label_smoothing=0.1).backward()
    want = w.grad.clone()
    w.grad = None
    logits = torch.conv2d(img, w)
    assert logits.is_contiguous(memory_format=fmt)
    ptr, strides, version = logits.data_ptr(), logits.stride(), logits._version
    loss = fo.cross_entropy(logits, y.to(target_dtype), inplace=True, label_smoothing=0.1)
    assert _fused(loss) and logits._version > version
    assert logits.data_ptr() == ptr and logits.stride() == strides
    loss.backward()
    _check(w.grad, want, torch.float32, "conv weight")


@fused
def test_inplace_bumps_the_version_counter():
    """A node that saved the logits must see the overwrite: here a second loss on the same
    logits, whose backward would otherwise read the gradient as logits."""
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([0, 5, 2, 1])
    logits = x * 2.0
    other = (logits ** 2).sum()  # pow saves logits
    before = logits._version
    fo.cross_entropy(logits, y, inplace=True)
    assert logits._version == before + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        other.backward()


@fused
@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int16, torch.int32])
def test_cross_entropy_integer_targets(target_dtype, no_fallback):
    """Any integer class indices (torch itself takes int64 and uint8)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(9, 13, generator=g)
    y = torch.randint(0, 13, (9,), generator=g)
    _compare(lambda a: fo.cross_entropy(a, y.to(target_dtype), label_smoothing=0.1),
             lambda b: TF.cross_entropy(b, y, label_smoothing=0.1), x)


BCE_BAD = [("input", float("nan")), ("input", 1.5), ("input", -0.5), ("target", 1.5),
           ("target", -0.5), ("target", float("nan"))]


@pytest.mark.parametrize("where,value", BCE_BAD, ids=[f"{w}={v}" for w, v in BCE_BAD])
def test_bce_outside_unit_interval_raises_torch_error(where, value):
    x = torch.rand(4, 5, requires_grad=True)
    y = torch.rand(4, 5)
    with torch.no_grad():
        (x if where == "input" else y)[2, 3] = value
    match = f"all elements of {where} should be between 0 and 1"
    for fn in (fo.binary_cross_entropy, fo.nn.BCELoss(), TF.binary_cross_entropy):
        for xin in (x, x.detach()):
            with pytest.raises(RuntimeError, match=match):
                fn(xin, y)


# --- double backward (create_graph=True) ------------------------------------------------

def _input_gradient_penalty(fn, x, grad_out=None):
    """d/dx (loss + |d loss / dx|^2 + <d loss / dx, v>), the second order through create_graph."""
    x = x.detach().clone().requires_grad_()
    loss = fn(x * 1.0)  # non-leaf, as a network's output
    g = torch.ones_like(loss) if grad_out is None else grad_out
    (dx,) = torch.autograd.grad(loss, x, g, create_graph=True)
    v = torch.linspace(-1, 1, dx.numel(), dtype=dx.dtype).reshape(dx.shape)
    total = (loss * g).sum() + dx.square().sum() + (dx * v).sum()
    (ddx,) = torch.autograd.grad(total, x)
    return loss, ddx


DOUBLE = [("cross_entropy", {}), ("cross_entropy", dict(reduction="none", weight=True)),
          ("cross_entropy", dict(label_smoothing=0.1, ignore_index=1, reduction="sum")),
          ("cross_entropy", dict(probs=True, weight=True)),
          ("cross_entropy", dict(kdim=True, label_smoothing=0.1)),
          ("cross_entropy", dict(z_loss=1e-2, softcap=3.0, weight=True, ignore_index=1)),
          ("cross_entropy", dict(z_loss=1e-2, probs=True, reduction="none")),
          ("mse_loss", {}), ("l1_loss", dict(reduction="sum")), ("huber_loss", dict(delta=0.7)),
          ("smooth_l1_loss", dict(beta=0.5, reduction="none")),
          ("binary_cross_entropy", dict(weight=True)),
          ("binary_cross_entropy_with_logits", dict(weight=True, pos_weight=True)),
          ("kl_div", dict(reduction="batchmean")), ("kl_div", dict(log_target=True))]


def _torch_extras(x, y, z_loss=0.0, softcap=None, reduction="mean", weight=None,
                  ignore_index=-100, **kw):
    """z-loss and soft-capping written out in torch ops, independently of fastopt."""
    s = x if softcap is None else softcap * torch.tanh(x / softcap)
    rows = TF.cross_entropy(s, y, weight, ignore_index=ignore_index, reduction="none", **kw)
    counted = torch.ones(rows.shape, dtype=torch.bool) if y.is_floating_point() \
        else y != ignore_index
    rows = rows + z_loss * torch.logsumexp(s, 1) ** 2 * counted
    if reduction == "none":
        return rows
    if y.is_floating_point():
        return rows.mean()
    denom = counted.sum() if weight is None else (weight[y.clamp(min=0)] * counted).sum()
    return rows.sum() / denom


@fused
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("name,kw", DOUBLE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DOUBLE)])
def test_double_backward_matches_torch(name, kw):
    """A gradient penalty through create_graph=True gets torch's second derivative (the fused
    first-order gradient is not differentiable; backward then switches to torch ops)."""
    g = torch.Generator().manual_seed(12)
    dtype = torch.float64
    kw = dict(kw)
    if name == "cross_entropy":
        shape = (4, 6, 3) if kw.pop("kdim", False) else (5, 6)
        x = torch.randn(shape, generator=g, dtype=dtype) * 2
        y = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), 1) if kw.pop(
            "probs", False) else torch.randint(0, 6, shape[:1] + shape[2:], generator=g)
        wshape = (6,)
    else:
        x, y = _elementwise_inputs(name, (5, 6), dtype, g)
        wshape = (6,)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(wshape, generator=g, dtype=dtype) + 0.5
    if kw.pop("pos_weight", False):
        kw["pos_weight"] = torch.rand(wshape, generator=g, dtype=dtype) + 0.5
    extras = "z_loss" in kw or "softcap" in kw
    ours = lambda a: getattr(fo, name)(a, y, **kw)  # noqa: E731
    theirs = (lambda b: _torch_extras(b, y, **kw)) if extras else \
        (lambda b: getattr(TF, name)(b, y, **kw))
    assert _fused(ours(x.clone().requires_grad_()))
    reduction = kw.get("reduction", "mean")
    grad_out = None
    if reduction == "none":
        grad_out = torch.rand(theirs(x).shape, generator=g, dtype=dtype) + 0.5
    la, da = _input_gradient_penalty(ours, x, grad_out)
    lb, db = _input_gradient_penalty(theirs, x, grad_out)
    _check(la, lb, dtype, "loss")
    _check(da, db, dtype, "second order")
    # and through loss.backward(create_graph=True) into a leaf's .grad
    xa = x.clone().requires_grad_()
    ours(xa).sum().backward(create_graph=True)
    xb = x.clone().requires_grad_()
    theirs(xb).sum().backward(create_graph=True)
    assert xa.grad.requires_grad == xb.grad.requires_grad  # False where the loss is linear
    if xb.grad.requires_grad:
        (ha,) = torch.autograd.grad(xa.grad.square().sum(), xa)
        (hb,) = torch.autograd.grad(xb.grad.square().sum(), xb)
        _check(ha, hb, dtype, "through .grad")


@fused
def test_double_backward_refused_where_it_cannot_be_right():
    x = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 4, 2, 1])
    loss = fo.cross_entropy(x * 1.0, y, inplace=True)
    with pytest.raises(RuntimeError, match="inplace=True.*cannot be differentiated twice"):
        torch.autograd.grad(loss, x, create_graph=True)
    # a first-order backward released the inputs: a later create_graph cannot use them
    loss = fo.cross_entropy(x * 1.0, y)
    torch.autograd.grad(loss, x, retain_graph=True)
    with pytest.raises(RuntimeError, match="create_graph=True to the first backward"):
        torch.autograd.grad(loss, x, create_graph=True)
    # the logits changed in place after the loss: as torch, refuse stale values
    logits = x * 1.0
    loss = fo.cross_entropy(logits, y)
    with torch.no_grad():
        logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, x, create_graph=True)
    # while first-order backward keeps working (the fused gradient does not read the logits)
    (gx,) = torch.autograd.grad(fo.cross_entropy(x * 1.0, y), x)
    (want,) = torch.autograd.grad(TF.cross_entropy(x * 1.0, y), x)
    _check(gx, want, torch.float32, "first order")


@fused
def test_first_order_backward_is_not_recorded_without_create_graph(no_fallback):
    x = torch.randn(4, 5, requires_grad=True)
    (gx,) = torch.autograd.grad(fo.cross_entropy(x * 1.0, torch.tensor([0, 4, 2, 1])), x)
    assert gx.grad_fn is None and not gx.requires_grad


# The LM head's in-place loss and backward on 64 MB of float32 logits: a hidden logits-sized
# buffer anywhere (fastopt's C++, torch's allocator) would raise the resident peak by 64 MB.
_INPLACE_SETUP = """
import torch
import fastopt.torch as fo
torch.manual_seed(0)
h = torch.randn(2048, 16, requires_grad=True)
w = torch.randn(8192, 16, requires_grad=True)
y = torch.randint(0, 8192, (2048,))
fo.cross_entropy(h[:4] @ w.T, y[:4], inplace=True).backward()  # warm-up
h.grad = w.grad = None
logits = h @ w.T
"""


@fused
def test_inplace_allocates_no_logits_sized_buffer():
    extra = peak_extra_bytes(_INPLACE_SETUP,
                             "fo.cross_entropy(logits, y, inplace=True).backward()")
    logits = 2048 * 8192 * 4
    assert extra < 0.05 * logits, (extra, logits)


def test_z_loss_and_softcap_on_the_torch_path():
    """Logits the kernel does not take (strided here; CUDA or bfloat16 alike) still get z_loss
    and softcap, from the torch-ops formula, equal to the fused result."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 6, 3, -100, 2])
    w = torch.rand(7, generator=g, dtype=torch.float64) + 0.5
    kw = dict(weight=w, z_loss=1e-2, softcap=2.5, label_smoothing=0.1)

    def strided(a):  # the same values, column-major: the torch-ops path
        return a.T.contiguous().T

    assert not _fused(fo.cross_entropy(strided(x).requires_grad_(), y, **kw))
    assert _fused(fo.cross_entropy(x.clone().requires_grad_(), y, **kw))
    _compare(lambda a: fo.cross_entropy(strided(a), y, **kw),
             lambda b: fo.cross_entropy(b, y, **kw), x, dtype=torch.float64)
